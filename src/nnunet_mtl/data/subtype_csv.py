"""Subtype CSVs: ``subtype_results.csv`` and ``labels.csv`` (header exactly ``Names,Subtype``; rows like
``quiz_037.nii.gz,1``) and ``subtype_probabilities.csv`` (``Names,p0,p1,p2``), written atomically. Where
the model folder holds a temperature, ``subtype_probabilities.csv`` has the calibrated probabilities and
``subtype_probabilities_uncalibrated.csv`` the network's own (the argmax of both is the subtype).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from nnunet_mtl.data.labels import NUM_SUBTYPES
from nnunet_mtl.errors import InputError
from nnunet_mtl.io import NIFTI_SUFFIX, write_text_atomic

HEADER = ["Names", "Subtype"]
RESULTS_CSV = "subtype_results.csv"
PROBABILITIES_CSV = "subtype_probabilities.csv"
UNCALIBRATED_PROBABILITIES_CSV = "subtype_probabilities_uncalibrated.csv"
TRUTH_LABELS_CSV = "labels.csv"
VALIDATION_TRUTH_CSV = "truth_labels.csv"  # the true subtypes next to the final validation's predictions


def format_subtype_csv(rows: Iterable[tuple[str, int]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows((name, int(subtype)) for name, subtype in sorted(rows))
    return buffer.getvalue()


def write_subtype_csv(path: Path, subtypes: Mapping[str, int]) -> None:
    """Write ``{case name: subtype}`` with names as mask file names (``<case>.nii.gz``)."""
    write_text_atomic(path, format_subtype_csv((f"{case}{NIFTI_SUFFIX}", k) for case, k in subtypes.items()))


def format_probabilities_csv(probabilities: Mapping[str, Sequence[float]]) -> str:
    num_classes = len(next(iter(probabilities.values()))) if probabilities else 0
    lines = ["Names," + ",".join(f"p{k}" for k in range(num_classes))]
    lines += [f"{c}{NIFTI_SUFFIX}," + ",".join(f"{p:.6f}" for p in probabilities[c]) for c in sorted(probabilities)]
    return "\n".join(lines) + "\n"


def write_subtype_outputs(
    out_dir: Path,
    subtypes: Mapping[str, int],
    probabilities: Mapping[str, Sequence[float]],
    uncalibrated: Mapping[str, Sequence[float]] | None = None,
) -> list[Path]:
    """``subtype_results.csv`` and ``subtype_probabilities.csv`` (one column per class) of ``{case: ...}``,
    and with ``uncalibrated``, ``subtype_probabilities_uncalibrated.csv`` (else an older one is removed)."""
    out_dir = Path(out_dir)
    write_subtype_csv(out_dir / RESULTS_CSV, subtypes)
    write_text_atomic(out_dir / PROBABILITIES_CSV, format_probabilities_csv(probabilities))
    written = [out_dir / RESULTS_CSV, out_dir / PROBABILITIES_CSV]
    if uncalibrated is None:
        (out_dir / UNCALIBRATED_PROBABILITIES_CSV).unlink(missing_ok=True)
    else:
        write_text_atomic(out_dir / UNCALIBRATED_PROBABILITIES_CSV, format_probabilities_csv(uncalibrated))
        written.append(out_dir / UNCALIBRATED_PROBABILITIES_CSV)
    return written


def read_probabilities_csv(path: Path) -> dict[str, list[float]]:
    """``{case name: [p0, p1, ...]}`` from a ``subtype_probabilities.csv``."""
    with Path(path).open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return {row[0].removesuffix(NIFTI_SUFFIX): [float(v) for v in row[1:]] for row in rows if row}


def read_subtype_csv(path: Path) -> dict[str, int]:
    """``{case name: subtype}`` from a ``Names,Subtype`` CSV; the ``.nii.gz`` ending is optional."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != HEADER:
            raise InputError(path, f"header must be exactly {','.join(HEADER)}, got {','.join(header or [])!r}")
        result: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 2:
                raise InputError(path, f"line {line}: expected 2 columns, got {len(row)}")
            name, value = row[0].strip(), row[1].strip()
            case = name[: -len(NIFTI_SUFFIX)] if name.endswith(NIFTI_SUFFIX) else name
            try:
                subtype = int(value)
            except ValueError:
                raise InputError(path, f"line {line}: subtype {value!r} is not an integer") from None
            if not 0 <= subtype < NUM_SUBTYPES:
                raise InputError(path, f"line {line}: subtype {subtype} outside 0..{NUM_SUBTYPES - 1}")
            if case in result:
                raise InputError(path, f"line {line}: case {name} listed twice")
            result[case] = subtype
    return result
