"""Whole-volume evaluation of a prediction folder against the truth, in the original geometry.

Truth masks come either from a split folder of the assignment layout (``validation/subtypeK/...``, the
subtype taken from the folder name) or from a flat folder of ``<case>.nii.gz`` masks (such as the
phantom's ``test_key/``). Truth subtypes come from ``--labels CSV``, else from the ``subtypeK`` folders,
else from ``labels.csv`` inside the truth folder. Predictions are ``<case>.nii.gz`` masks plus
``subtype_results.csv``. A truth case without a prediction, or a prediction whose geometry differs from
its truth, is an error: nothing is resampled or skipped silently. In a flat truth folder every
``<case>.nii.gz`` is a truth case, ``<case>_0000.nii.gz`` images are skipped, any other NIfTI-like name
(``quiz_5.nii``) is refused and other files (``labels.csv``, nnU-Net's JSON files) are not read. Only the
truth cases' masks and ``subtype_results.csv`` are read from the prediction folder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_mtl.data.labels import REGIONS, round_labels
from nnunet_mtl.data.layout import CHANNEL_SUFFIX, SUBTYPE_FOLDERS, scan_labelled_split
from nnunet_mtl.data.subtype_csv import RESULTS_CSV, TRUTH_LABELS_CSV, read_subtype_csv
from nnunet_mtl.errors import InputError
from nnunet_mtl.evaluation.metrics import (
    ClassificationSummary,
    RegionSummary,
    classification_summary,
    region_dice,
    summarize_region,
)
from nnunet_mtl.io import NIFTI_SUFFIX, Geometry, array_of, read_volume

IO_THREADS = 4
DICE_CONVENTION = (
    "Dice is computed per case on the whole volume in the original geometry. When truth and prediction "
    "are both empty for a region the Dice is undefined: reported as null and excluded from the mean "
    "(as nnU-Net does); n_both_empty counts those cases."
)


@dataclass(frozen=True)
class TruthCase:
    name: str
    mask: Path
    subtype: int | None


@dataclass
class CaseResult:
    name: str
    dice: dict[str, float]
    subtype_true: int | None = None
    subtype_pred: int | None = None


@dataclass
class Evaluation:
    cases: list[CaseResult]
    regions: dict[str, RegionSummary]
    classification: ClassificationSummary | None
    classification_note: str | None

    def to_json(self) -> dict:
        def clean(value: float) -> float | None:
            return None if value is None or math.isnan(value) else value

        return {
            "convention": DICE_CONVENTION,
            "num_cases": len(self.cases),
            "segmentation": {region: asdict(summary) for region, summary in self.regions.items()},
            "classification": None if self.classification is None else asdict(self.classification),
            "classification_note": self.classification_note,
            "cases": [
                {
                    "name": c.name,
                    **{f"dice_{region}": clean(v) for region, v in c.dice.items()},
                    "subtype_true": c.subtype_true,
                    "subtype_pred": c.subtype_pred,
                }
                for c in self.cases
            ],
        }


def find_truth(truth_dir: Path) -> list[TruthCase]:
    truth_dir = Path(truth_dir)
    if not truth_dir.is_dir():
        raise InputError(truth_dir, "truth folder not found")
    if any(p.name in SUBTYPE_FOLDERS for p in truth_dir.iterdir()):
        return [TruthCase(c.name, c.mask, c.subtype) for c in scan_labelled_split(truth_dir)]
    masks = []
    for path in sorted(p for p in truth_dir.iterdir() if not p.name.startswith(".")):
        if path.name.endswith(CHANNEL_SUFFIX + NIFTI_SUFFIX):
            continue  # an image next to its mask
        if path.name.endswith(NIFTI_SUFFIX) and path.is_file():
            masks.append(path)
        elif ".nii" in path.name:  # would be a truth case dropped unseen
            raise InputError(path, f"not a truth mask: masks are named <case>{NIFTI_SUFFIX}")
    if not masks:
        raise InputError(truth_dir, f"no truth masks (*{NIFTI_SUFFIX}) found")
    return [TruthCase(p.name[: -len(NIFTI_SUFFIX)], p, None) for p in masks]


def _truth_subtypes(truth: list[TruthCase], truth_dir: Path, labels_csv: Path | None) -> dict[str, int] | None:
    if labels_csv is not None:
        return read_subtype_csv(labels_csv)
    if all(t.subtype is not None for t in truth):
        return {t.name: t.subtype for t in truth}
    if (Path(truth_dir) / TRUTH_LABELS_CSV).is_file():
        return read_subtype_csv(Path(truth_dir) / TRUTH_LABELS_CSV)
    return None


def _score_case(truth: TruthCase, pred_dir: Path) -> CaseResult:
    pred_path = pred_dir / f"{truth.name}{NIFTI_SUFFIX}"
    if not pred_path.is_file():
        raise InputError(pred_path, f"prediction missing for truth case {truth.name}")
    truth_image, truth_labels = read_labels(truth.mask)
    pred_image, pred_labels = read_labels(pred_path)
    problem = Geometry.of(pred_image).mismatch(Geometry.of(truth_image))
    if problem:
        raise InputError(pred_path, f"geometry differs from the truth {truth.mask}: {problem}")
    return CaseResult(truth.name, region_dice(pred_labels, truth_labels))


def read_labels(path: Path) -> tuple[sitk.Image, np.ndarray]:
    """A checked mask and its integer label map."""
    image = read_volume(path)
    return image, round_labels(array_of(image), path)


def check_truth(truth_dir: Path, names: Sequence[str], labels_csv: Path | None = None) -> None:
    """Check the truth of ``names`` (masks and, where given, subtypes) before anything is predicted."""
    truth = {t.name: t for t in find_truth(truth_dir)}
    for name in names:
        if name not in truth:
            raise InputError(truth_dir, f"no truth mask for case {name}")
        read_labels(truth[name].mask)
    subtypes = _truth_subtypes(list(truth.values()), truth_dir, labels_csv)
    for name in names if subtypes is not None else ():
        if name not in subtypes:
            raise InputError(labels_csv or truth_dir, f"no truth subtype for case {name}")


def evaluate_folder(
    pred_dir: Path, truth_dir: Path, labels_csv: Path | None = None, cases: Sequence[str] | None = None
) -> Evaluation:
    """Evaluate every truth case (or only ``cases``, for a truth folder that holds more)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(pred_dir, "prediction folder not found")
    truth = find_truth(truth_dir)
    if cases is not None:
        wanted = set(cases)
        truth = [t for t in truth if t.name in wanted]
        missing = wanted - {t.name for t in truth}
        if missing:
            raise InputError(truth_dir, f"no truth mask for case {sorted(missing)[0]}")
    true_subtypes = _truth_subtypes(truth, truth_dir, labels_csv)
    pred_csv = pred_dir / RESULTS_CSV
    pred_subtypes = read_subtype_csv(pred_csv) if pred_csv.is_file() else None

    with ThreadPoolExecutor(IO_THREADS) as pool:
        cases = list(pool.map(lambda t: _score_case(t, pred_dir), truth))
    regions = {region: summarize_region([c.dice[region] for c in cases]) for region in REGIONS}

    note = None
    classification = None
    if true_subtypes is None:
        note = f"no truth subtypes (give --labels, subtypeK folders or {TRUTH_LABELS_CSV} in the truth folder)"
    elif pred_subtypes is None:
        note = f"no {RESULTS_CSV} in the prediction folder"
    else:
        for case in cases:
            if case.name not in true_subtypes:
                raise InputError(labels_csv or truth_dir, f"no truth subtype for case {case.name}")
            if case.name not in pred_subtypes:
                raise InputError(pred_csv, f"no predicted subtype for case {case.name}{NIFTI_SUFFIX}")
            case.subtype_true = true_subtypes[case.name]
            case.subtype_pred = pred_subtypes[case.name]
        classification = classification_summary([c.subtype_true for c in cases], [c.subtype_pred for c in cases])
    return Evaluation(cases, regions, classification, note)
