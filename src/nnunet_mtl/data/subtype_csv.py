"""Subtype CSVs (``subtype_results.csv``, ``labels.csv``).

Header exactly ``Names,Subtype``; rows like ``quiz_037.nii.gz,1``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from pathlib import Path

from nnunet_mtl.data.labels import NUM_SUBTYPES
from nnunet_mtl.errors import InputError
from nnunet_mtl.io import NIFTI_SUFFIX, write_text_atomic

HEADER = ["Names", "Subtype"]


def format_subtype_csv(rows: Iterable[tuple[str, int]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows((name, int(subtype)) for name, subtype in sorted(rows))
    return buffer.getvalue()


def write_subtype_csv(path: Path, subtypes: Mapping[str, int]) -> None:
    """Write ``{case name: subtype}`` with names as mask file names (``<case>.nii.gz``)."""
    write_text_atomic(path, format_subtype_csv((f"{case}{NIFTI_SUFFIX}", k) for case, k in subtypes.items()))


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
