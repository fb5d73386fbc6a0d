"""``nnunet-mtl postprocess`` and the end of training: determine the model folder's postprocessing on every
fold's final validation (``postprocessing/determine.py``), store it for ``predict``, and write each fold's
validation again with it applied (``fold_K/validation/postprocessed/``, with its metrics), as nnU-Net does."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_mtl.data.subtype_csv import (
    PROBABILITIES_CSV,
    UNCALIBRATED_PROBABILITIES_CSV,
    VALIDATION_TRUTH_CSV,
    read_probabilities_csv,
    write_subtype_outputs,
)
from nnunet_mtl.errors import InputError
from nnunet_mtl.evaluation.evaluate import Evaluation, evaluate_folder, read_labels
from nnunet_mtl.evaluation.outputs import write_evaluation
from nnunet_mtl.io import NIFTI_SUFFIX, write_image_atomic
from nnunet_mtl.postprocessing.determine import determine_for_folders
from nnunet_mtl.postprocessing.lesion_threshold import (
    DEFAULT_THRESHOLD,
    QUANTA,
    read_region_probabilities,
    region_probabilities_path,
    thresholded_labels,
)
from nnunet_mtl.postprocessing.plan import Postprocessing, write_postprocessing
from nnunet_mtl.postprocessing.temperature import rescaled_probabilities

VALIDATION_FOLDER = "validation"
POSTPROCESSED_FOLDER = "postprocessed"


def validated_folds(model_dir: Path) -> list[int]:
    """Folds whose final validation has finished (its metrics.json exists)."""
    folds = []
    for folder in Path(model_dir).glob("fold_*"):
        if folder.name[5:].isdigit() and (folder / VALIDATION_FOLDER / "metrics.json").is_file():
            folds.append(int(folder.name[5:]))
    return sorted(folds)


def default_gt_folder(model_dir: Path) -> Path:
    """``$nnUNet_preprocessed/DatasetNNN_NAME/gt_segmentations`` of ``.../DatasetNNN_NAME/<model folder>``."""
    from nnunet_mtl.paths import ensure_nnunet_env

    return ensure_nnunet_env(announce=False).preprocessed / Path(model_dir).resolve().parent.name / "gt_segmentations"


def apply_to_validation(postprocessing: Postprocessing, folder: Path, gt_folder: Path) -> Evaluation:
    """``folder/postprocessed/``: the final validation's masks and probabilities with ``postprocessing``
    applied, and their metrics."""
    out = Path(folder) / POSTPROCESSED_FOLDER
    raw_csv = folder / UNCALIBRATED_PROBABILITIES_CSV
    raw = read_probabilities_csv(raw_csv if raw_csv.is_file() else folder / PROBABILITIES_CSV)
    for name in raw:
        image, labels = read_labels(folder / f"{name}{NIFTI_SUFFIX}")
        if postprocessing.lesion_threshold != DEFAULT_THRESHOLD:  # determined on these files: they exist
            regions = read_region_probabilities(region_probabilities_path(folder, name))
            labels = thresholded_labels(regions, postprocessing.lesion_threshold, QUANTA)
        processed = sitk.GetImageFromArray(postprocessing.segmentation(labels).astype(np.uint8))
        processed.CopyInformation(image)
        write_image_atomic(processed, out / f"{name}{NIFTI_SUFFIX}")
    calibrated = {name: rescaled_probabilities(p, postprocessing.temperature) for name, p in raw.items()}
    write_subtype_outputs(
        out,
        {name: int(np.argmax(p)) for name, p in calibrated.items()},
        {name: [float(v) for v in p] for name, p in calibrated.items()},
        raw,
    )
    evaluation = evaluate_folder(out, gt_folder, folder / VALIDATION_TRUTH_CSV, cases=sorted(raw))
    write_evaluation(evaluation, out)
    return evaluation


def determine_for_model(
    model_dir: Path, folds: Sequence[int] | None = None, gt_folder: Path | None = None
) -> tuple[Postprocessing, Path]:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError(model_dir, "model folder not found")
    available = validated_folds(model_dir)
    folds = available if folds is None else list(folds)
    missing = [f for f in folds if f not in available]
    if not folds or missing:
        where = model_dir / f"fold_{missing[0]}" if missing else model_dir
        raise InputError(where, f"no finished final validation ({VALIDATION_FOLDER}/metrics.json)")
    gt_folder = Path(gt_folder) if gt_folder is not None else default_gt_folder(model_dir)
    if not gt_folder.is_dir():
        raise InputError(gt_folder, "truth masks of the validation cases not found (nnU-Net's gt_segmentations)")
    folders = [model_dir / f"fold_{f}" / VALIDATION_FOLDER for f in folds]
    postprocessing = determine_for_folders(folders, gt_folder)
    path = write_postprocessing(model_dir, postprocessing)
    for folder in folders:
        apply_to_validation(postprocessing, folder, gt_folder)
    return postprocessing, path


def format_postprocessing(postprocessing: Postprocessing) -> str:
    info = postprocessing.determined_on
    lines = [f"postprocessing determined on {info['cases']} validation cases ({info['source']}):"]
    thresholds = info.get("lesion_threshold") or []
    lines.append(
        f"  lesion threshold {postprocessing.lesion_threshold:g}"
        + (
            " (validation lesion Dice, gain over 0.5 [one-sided lower bound]: "
            + ", ".join(
                f"{row['threshold']:g}: {row['lesion_dice']:.4f}, {row['gain']:+.4f} [{row['lower']:+.4f}]"
                for row in thresholds
            )
            + ")"
            if thresholds
            else " (no region probabilities stored with the validation masks: nnU-Net's)"
        )
    )
    for step in info["mask_steps"]:
        before, after = step["mean_dice_before"], step["mean_dice_after"]
        numbers = ", ".join(f"{region} {before[region] or 0:.4f} -> {after[region] or 0:.4f}" for region in before)
        lines.append(f"  {step['step']:<26} {'kept' if step['kept'] else 'not kept'} (mean Dice {numbers})")
    t = info["temperature"]
    lines.append(
        f"  subtype temperature {postprocessing.temperature:.3f}: log loss {t['log_loss_before']:.4f} -> "
        f"{t['log_loss_after']:.4f}, ECE {t['ece_before']:.4f} -> {t['ece_after']:.4f} (on the same cases)"
    )
    return "\n".join(lines)
