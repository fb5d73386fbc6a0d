"""Whole-volume validation of a multitask network on preprocessed cases, scored in the original geometry."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

from nnunet_mtl.config import MultitaskConfig
from nnunet_mtl.data.labels import REGIONS
from nnunet_mtl.evaluation.metrics import classification_summary, region_dice, summarize_region
from nnunet_mtl.inference.forward import predict_case
from nnunet_mtl.model.multitask import MultitaskUNet
from nnunet_mtl.training.distributed import gather_objects


@dataclass(frozen=True)
class ValidatedCase:
    name: str
    dice: dict[str, float]
    subtype_true: int
    subtype_pred: int
    probabilities: list[float]


@dataclass(frozen=True)
class ValidationMetrics:
    dice_whole: float
    dice_lesion: float
    macro_f1: float
    accuracy: float
    combined: float
    cases: list[ValidatedCase]


def validate_cases(
    network: MultitaskUNet,
    dataset,
    keys: Sequence[str],
    subtypes: Mapping[str, int],
    plans_manager,
    configuration_manager,
    label_manager,
    gt_folder: Path,
    config: MultitaskConfig,
    export_folder: Path | None = None,
) -> list[ValidatedCase]:
    """Predict each case in one pass (or tiles), bring the mask back to the original geometry and score it."""
    reader = plans_manager.image_reader_writer_class()
    file_ending = ".nii.gz"
    features = configuration_manager.network_arch_init_kwargs["features_per_stage"][0]
    results = []
    network.eval()
    for key in keys:
        data, _, _, properties = dataset.load_case(key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-writable blosc2 arrays
            data = torch.from_numpy(np.asarray(data[:]))
        prediction = predict_case(
            network,
            data,
            configuration_manager.patch_size,
            configuration_manager.pool_op_kernel_sizes,
            features,
            config.inference.memory_budget_gb * 2**30,
            config.inference.tile_step_size,
        )
        segmentation = convert_predicted_logits_to_segmentation_with_correct_shape(
            prediction.segmentation_logits, plans_manager, configuration_manager, label_manager, properties
        )
        truth, _ = reader.read_seg(str(Path(gt_folder) / f"{key}{file_ending}"))
        probabilities = torch.softmax(prediction.class_logits, 0)
        results.append(
            ValidatedCase(
                key,
                region_dice(segmentation, truth[0]),
                int(subtypes[key]),
                int(probabilities.argmax()),
                [float(p) for p in probabilities],
            )
        )
        if export_folder is not None:
            reader.write_seg(
                segmentation.astype(np.uint8), str(Path(export_folder) / f"{key}{file_ending}"), properties
            )
    return results


def summarize(cases: list[ValidatedCase], config: MultitaskConfig) -> ValidationMetrics:
    regions = {region: summarize_region([c.dice[region] for c in cases]) for region in REGIONS}
    classes = classification_summary([c.subtype_true for c in cases], [c.subtype_pred for c in cases])
    whole = regions["whole_pancreas"].mean_dice or 0.0
    lesion = regions["lesion"].mean_dice or 0.0
    return ValidationMetrics(
        whole,
        lesion,
        classes.macro_f1,
        classes.accuracy,
        config.selection.combined(whole, lesion, classes.macro_f1),
        cases,
    )


def validate_all_ranks(local_cases: list[ValidatedCase], config: MultitaskConfig) -> ValidationMetrics:
    """Gather every rank's cases so that all ranks compute the same metrics (and stop at the same epoch)."""
    cases = sorted(gather_objects(local_cases), key=lambda c: c.name)
    return summarize(cases, config)
