"""Determine a model folder's postprocessing on its final validation predictions (every fold's, pooled:
out-of-fold predictions where several folds exist), the nnU-Net way: each mask step in turn is kept when
it raises the mean Dice over the regions and lowers none of them; then one temperature is fitted to the
subtype probabilities. Both are written to the model folder for ``predict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_mtl.config import EVALUATION, POSTPROCESSING, PostprocessingConfig
from nnunet_mtl.data.labels import REGIONS
from nnunet_mtl.data.subtype_csv import (
    PROBABILITIES_CSV,
    UNCALIBRATED_PROBABILITIES_CSV,
    VALIDATION_TRUTH_CSV,
    read_probabilities_csv,
    read_subtype_csv,
)
from nnunet_mtl.errors import InputError
from nnunet_mtl.evaluation.calibration import expected_calibration_error, multiclass_log_loss
from nnunet_mtl.evaluation.evaluate import read_labels
from nnunet_mtl.evaluation.metrics import region_dice, summarize_region
from nnunet_mtl.io import NIFTI_SUFFIX
from nnunet_mtl.postprocessing.components import STEPS, apply_step
from nnunet_mtl.postprocessing.plan import Postprocessing
from nnunet_mtl.postprocessing.temperature import fit_temperature, rescaled_probabilities


@dataclass
class ValidationCase:
    name: str
    prediction: np.ndarray  # label maps cropped to the box around both masks' foreground (same Dice, less memory)
    truth: np.ndarray
    subtype_true: int
    probabilities: list[float]  # uncalibrated


def _crop_to_foreground(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    coordinates = np.argwhere((prediction > 0) | (truth > 0))
    if len(coordinates) == 0:
        return prediction[:1, :1, :1].copy(), truth[:1, :1, :1].copy()
    box = tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(coordinates.min(0), coordinates.max(0)))
    return prediction[box].copy(), truth[box].copy()


def read_validation_folder(folder: Path, gt_folder: Path) -> list[ValidationCase]:
    """The final validation's predictions in ``folder`` (``fold_K/validation``) with their truth."""
    folder, gt_folder = Path(folder), Path(gt_folder)
    subtypes = read_subtype_csv(folder / VALIDATION_TRUTH_CSV)
    probabilities_csv = folder / UNCALIBRATED_PROBABILITIES_CSV
    if not probabilities_csv.is_file():
        probabilities_csv = folder / PROBABILITIES_CSV
    if not probabilities_csv.is_file():
        raise InputError(folder, f"no {PROBABILITIES_CSV}: not the final validation of a multitask model")
    probabilities = read_probabilities_csv(probabilities_csv)
    cases = []
    for name in sorted(subtypes):
        if name not in probabilities:
            raise InputError(probabilities_csv, f"no probabilities for case {name}{NIFTI_SUFFIX}")
        _, prediction = read_labels(folder / f"{name}{NIFTI_SUFFIX}")
        _, truth = read_labels(gt_folder / f"{name}{NIFTI_SUFFIX}")
        prediction, truth = _crop_to_foreground(prediction, truth)
        cases.append(ValidationCase(name, prediction, truth, subtypes[name], probabilities[name]))
    return cases


def mean_dice(predictions: Sequence[np.ndarray], cases: Sequence[ValidationCase]) -> dict[str, float | None]:
    scores = [region_dice(p, c.truth) for p, c in zip(predictions, cases)]
    return {region: summarize_region([s[region] for s in scores]).mean_dice for region in REGIONS}


def _improves(before: dict, after: dict, min_gain: float) -> bool:
    regions = [r for r in REGIONS if before[r] is not None and after[r] is not None]
    if not regions or any(after[r] < before[r] for r in regions):
        return False
    return bool(np.mean([after[r] for r in regions]) > np.mean([before[r] for r in regions]) + min_gain)


def determine_mask_steps(
    cases: Sequence[ValidationCase], config: PostprocessingConfig = POSTPROCESSING
) -> tuple[tuple[str, ...], list[dict]]:
    current = [c.prediction for c in cases]
    baseline = mean_dice(current, cases)
    kept, report = [], []
    for step in STEPS:
        candidate = [apply_step(p, step) for p in current]
        after = mean_dice(candidate, cases)
        keep = _improves(baseline, after, config.min_dice_gain)
        report.append({"step": step, "kept": keep, "mean_dice_before": baseline, "mean_dice_after": after})
        if keep:
            kept.append(step)
            current, baseline = candidate, after
    return tuple(kept), report


def determine(
    cases: Sequence[ValidationCase], source: str, config: PostprocessingConfig = POSTPROCESSING
) -> Postprocessing:
    if not cases:
        raise InputError(source, "no validation cases to determine the postprocessing on")
    steps, report = determine_mask_steps(cases, config)
    truth = [c.subtype_true for c in cases]
    raw = np.array([c.probabilities for c in cases])
    temperature = fit_temperature(truth, raw, config.log_temperature_prior_sd, config.min_temperature)
    calibrated = rescaled_probabilities(raw, temperature)
    bins = EVALUATION.calibration_bins
    calibration = {
        "log_loss_before": multiclass_log_loss(truth, raw),
        "log_loss_after": multiclass_log_loss(truth, calibrated),
        "ece_before": expected_calibration_error(truth, raw, bins),
        "ece_after": expected_calibration_error(truth, calibrated, bins),
        "note": "on the cases the temperature was fitted on; held-out numbers are in the report of a test split",
    }
    determined_on = {"source": source, "cases": len(cases), "mask_steps": report, "temperature": calibration}
    return Postprocessing(temperature, steps, determined_on)


def determine_for_folders(
    folders: Sequence[Path], gt_folder: Path, config: PostprocessingConfig = POSTPROCESSING
) -> Postprocessing:
    cases = [case for folder in folders for case in read_validation_folder(folder, gt_folder)]
    return determine(cases, ", ".join(str(f) for f in folders), config)
