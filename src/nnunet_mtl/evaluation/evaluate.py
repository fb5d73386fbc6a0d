"""Whole-volume evaluation of a prediction folder against the truth, in the original geometry.

Truth masks come either from a split folder of the assignment layout (``validation/subtypeK/...``, the
subtype taken from the folder name) or from a flat folder of ``<case>.nii.gz`` masks (such as the
phantom's ``test_key/``). Truth subtypes come from ``--labels CSV``, else from the ``subtypeK`` folders,
else from ``labels.csv`` inside the truth folder. Predictions are ``<case>.nii.gz`` masks plus
``subtype_results.csv`` (and, where present, ``subtype_probabilities.csv`` and its uncalibrated twin). A
truth case without a prediction, or a prediction whose geometry differs from its truth, is an error:
nothing is resampled or skipped silently. In a flat truth folder every ``<case>.nii.gz`` is a truth case,
``<case>_0000.nii.gz`` images are skipped, any other NIfTI-like name (``quiz_5.nii``) is refused and other
files (``labels.csv``, nnU-Net's JSON files) are not read. Only the truth cases' masks and the subtype CSVs
are read from the prediction folder.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_mtl.config import EVALUATION, EvaluationConfig
from nnunet_mtl.data.labels import REGIONS, round_labels
from nnunet_mtl.data.layout import CHANNEL_SUFFIX, SUBTYPE_FOLDERS, scan_labelled_split
from nnunet_mtl.data.subtype_csv import (
    PROBABILITIES_CSV,
    RESULTS_CSV,
    TRUTH_LABELS_CSV,
    UNCALIBRATED_PROBABILITIES_CSV,
    read_probabilities_csv,
    read_subtype_csv,
)
from nnunet_mtl.errors import InputError
from nnunet_mtl.evaluation.bootstrap import Resampler
from nnunet_mtl.evaluation.detection import DetectionSummary, detection_summary, lesion_present
from nnunet_mtl.evaluation.metrics import (
    ClassificationSummary,
    RegionSummary,
    classification_summary,
    region_dice,
    summarize_region,
)
from nnunet_mtl.evaluation.summary import label_intervals, probability_section, region_section
from nnunet_mtl.evaluation.surface import SurfaceMetrics, region_surface_metrics
from nnunet_mtl.io import NIFTI_SUFFIX, Geometry, array_of, read_volume

IO_THREADS = 4
DICE_CONVENTION = (
    "Dice is computed per case on the whole volume in the original geometry. When truth and prediction "
    "are both empty for a region the Dice is undefined: reported as null and excluded from the mean "
    "(as nnU-Net does); n_both_empty counts those cases."
)
CONVENTIONS = {
    "dice": DICE_CONVENTION,
    "nsd": "normalised surface distance (MONAI) at tolerance_mm in physical units: null when both masks are "
    "empty, 0 when only one is",
    "hd95_mm": "percentile Hausdorff distance (MONAI) in mm: null when either mask is empty (counted in "
    "n_undefined), left out of the mean",
    "volume_difference_ml": "predicted minus true volume in millilitres, always defined",
    "detection": "a lesion is present when its volume reaches min_volume_mm3; sensitivity over cases with a "
    "true lesion, specificity over cases without; null without such cases",
    "intervals": "percentile bootstrap over cases (the same seeded resamples for every metric); undefined "
    "cases are left out of each resample's mean",
}


@dataclass(frozen=True)
class TruthCase:
    name: str
    mask: Path
    subtype: int | None


@dataclass
class CaseResult:
    name: str
    dice: dict[str, float]
    surface: dict[str, SurfaceMetrics]
    subtype_true: int | None = None
    subtype_pred: int | None = None
    probabilities: list[float] | None = None
    probabilities_uncalibrated: list[float] | None = None

    def lesion_present(self, truth: bool, config: EvaluationConfig = EVALUATION) -> bool:
        surface = self.surface["lesion"]
        return bool(lesion_present(surface.volume_true_ml if truth else surface.volume_pred_ml, config))

    def to_json(self, config: EvaluationConfig = EVALUATION) -> dict:
        def clean(value: float) -> float | None:
            return None if value is None or math.isnan(value) else value

        values: dict = {"name": self.name, **{f"dice_{region}": clean(v) for region, v in self.dice.items()}}
        for region, surface in self.surface.items():
            values[f"nsd_{region}"] = clean(surface.nsd)
            values[f"hd95_{region}_mm"] = clean(surface.hd)
            values[f"volume_pred_ml_{region}"] = surface.volume_pred_ml
            values[f"volume_true_ml_{region}"] = surface.volume_true_ml
        values["lesion_present_true"] = self.lesion_present(True, config)
        values["lesion_present_pred"] = self.lesion_present(False, config)
        values |= {"subtype_true": self.subtype_true, "subtype_pred": self.subtype_pred}
        values |= {"probabilities": self.probabilities, "probabilities_uncalibrated": self.probabilities_uncalibrated}
        return values


@dataclass
class Evaluation:
    cases: list[CaseResult]
    regions: dict[str, RegionSummary]
    classification: ClassificationSummary | None
    classification_note: str | None
    config: EvaluationConfig = EVALUATION

    @cached_property
    def resampler(self) -> Resampler:
        return Resampler(len(self.cases), self.config)

    @cached_property
    def detection(self) -> DetectionSummary:
        return detection_summary(
            [c.name for c in self.cases],
            [c.lesion_present(True, self.config) for c in self.cases],
            [c.lesion_present(False, self.config) for c in self.cases],
            self.resampler,
        )

    def _probabilities(self, uncalibrated: bool) -> dict | None:
        values = [c.probabilities_uncalibrated if uncalibrated else c.probabilities for c in self.cases]
        if self.classification is None or any(v is None for v in values):
            return None
        return probability_section([c.subtype_true for c in self.cases], values, self.resampler)

    def to_json(self) -> dict:
        """metrics.json (computed once: an evaluation is not changed after it is made)."""
        return copy.deepcopy(self._json)

    @cached_property
    def _json(self) -> dict:
        segmentation = {}
        for region, summary in self.regions.items():
            section = region_section(
                [c.dice[region] for c in self.cases], [c.surface[region] for c in self.cases], self.resampler
            )
            segmentation[region] = {**asdict(summary), "mean_dice_ci": section["dice"]["ci"], **section}
        classification = None
        if self.classification is not None:
            truth, prediction = [c.subtype_true for c in self.cases], [c.subtype_pred for c in self.cases]
            classification = {
                **asdict(self.classification),
                "intervals": label_intervals(truth, prediction, self.classification, self.resampler),
            }
        return {
            "convention": DICE_CONVENTION,
            "conventions": CONVENTIONS,
            "bootstrap": {
                "resamples": self.config.bootstrap_resamples,
                "seed": self.config.bootstrap_seed,
                "confidence_level": self.config.confidence_level,
                "method": "percentile",
            },
            "num_cases": len(self.cases),
            "segmentation": segmentation,
            "detection": self.detection.to_json(),
            "classification": classification,
            "classification_note": self.classification_note,
            "probabilities": self._probabilities(uncalibrated=False),
            "probabilities_uncalibrated": self._probabilities(uncalibrated=True),
            "cases": [c.to_json(self.config) for c in self.cases],
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


def truth_subtypes(truth_dir: Path, labels_csv: Path | None = None) -> dict[str, int] | None:
    """Each truth case's subtype: from ``labels_csv``, the ``subtypeK/`` folders, or the folder's labels.csv."""
    return _truth_subtypes(find_truth(truth_dir), truth_dir, labels_csv)


def _score_case(truth: TruthCase, pred_dir: Path, config: EvaluationConfig) -> CaseResult:
    pred_path = pred_dir / f"{truth.name}{NIFTI_SUFFIX}"
    if not pred_path.is_file():
        raise InputError(pred_path, f"prediction missing for truth case {truth.name}")
    truth_image, truth_labels = read_labels(truth.mask)
    pred_image, pred_labels = read_labels(pred_path)
    problem = Geometry.of(pred_image).mismatch(Geometry.of(truth_image))
    if problem:
        raise InputError(pred_path, f"geometry differs from the truth {truth.mask}: {problem}")
    spacing_zyx = tuple(reversed(truth_image.GetSpacing()))
    surface = region_surface_metrics(
        pred_labels, truth_labels, spacing_zyx, config.nsd_tolerance_mm, config.hd_percentile
    )
    return CaseResult(truth.name, region_dice(pred_labels, truth_labels), surface)


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
    pred_dir: Path,
    truth_dir: Path,
    labels_csv: Path | None = None,
    cases: Sequence[str] | None = None,
    config: EvaluationConfig = EVALUATION,
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
        cases = list(pool.map(lambda t: _score_case(t, pred_dir, config), truth))
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
        _attach_probabilities(cases, pred_dir)
    return Evaluation(cases, regions, classification, note, config)


def _attach_probabilities(cases: list[CaseResult], pred_dir: Path) -> None:
    """Each case's subtype probabilities, calibrated and not, where the prediction folder has their CSVs."""
    for csv_name, attribute in (
        (PROBABILITIES_CSV, "probabilities"),
        (UNCALIBRATED_PROBABILITIES_CSV, "probabilities_uncalibrated"),
    ):
        path = pred_dir / csv_name
        if not path.is_file():
            continue
        probabilities = read_probabilities_csv(path)
        for case in cases:
            if case.name not in probabilities:
                raise InputError(path, f"no probabilities for case {case.name}{NIFTI_SUFFIX}")
            setattr(case, attribute, probabilities[case.name])
