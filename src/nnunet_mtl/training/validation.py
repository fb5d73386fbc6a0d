"""Whole-volume validation of a multitask network on preprocessed cases, scored in the original geometry."""

from __future__ import annotations

import pickle
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from nnunet_mtl.config import MultitaskConfig
from nnunet_mtl.data.labels import REGIONS
from nnunet_mtl.data.subtype_csv import VALIDATION_TRUTH_CSV, write_subtype_csv, write_subtype_outputs
from nnunet_mtl.evaluation.evaluate import Evaluation, evaluate_folder
from nnunet_mtl.evaluation.metrics import classification_summary, region_dice, summarize_region
from nnunet_mtl.evaluation.outputs import write_evaluation
from nnunet_mtl.inference.cases import mask_file_name, segmentation_in_input_geometry, write_mask
from nnunet_mtl.inference.engine import InferenceEngine
from nnunet_mtl.io import atomic_path
from nnunet_mtl.postprocessing.lesion_threshold import region_probabilities_path, write_region_probabilities
from nnunet_mtl.training.distributed import gather_objects

TRUTH_LABELS = VALIDATION_TRUTH_CSV


@dataclass(frozen=True)
class ValidatedCase:
    name: str
    dice: dict[str, float]
    subtype_true: int
    subtype_pred: int
    probabilities: list[float]
    forward_seconds: float = 0.0  # the engine's forward of this case (both outputs, every pass)
    forward_passes: int = 1
    path: str = "whole"  # the path the engine ran ("whole" or "sliding"; "auto" resolves per case)
    head_features: np.ndarray | None = None  # what the head's readout classified (one network only)


@dataclass(frozen=True)
class ValidationMetrics:
    dice_whole: float
    dice_lesion: float
    macro_f1: float
    accuracy: float
    combined: float
    cases: list[ValidatedCase]


def preprocessed_case(dataset, key: str) -> tuple[torch.Tensor, dict]:
    """A case of nnU-Net's preprocessed dataset as a tensor (channels, *spatial), and its properties."""
    data, _, _, properties = dataset.load_case(key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-writable blosc2 arrays
        return torch.from_numpy(np.asarray(data[:])), properties


def validate_cases(
    engine: InferenceEngine,
    dataset,
    keys: Sequence[str],
    subtypes: Mapping[str, int],
    plans_manager,
    configuration_manager,
    label_manager,
    gt_folder: Path,
    export_folder: Path | None = None,
    save_probabilities: bool = False,
) -> list[ValidatedCase]:
    """Predict each case with ``predict``'s engine (its precision, path choice and fallbacks), bring the mask
    back to the original geometry with ``predict``'s export and score it.

    With ``export_folder`` the masks are written there, with the quantised region probabilities the lesion
    threshold is determined on (``postprocessing/lesion_threshold.py``; region models), and with
    ``save_probabilities`` the probabilities as nnU-Net's ``--npz`` writes them (``<case>.npz``, ``.pkl``)."""
    reader = plans_manager.image_reader_writer_class()
    keep_regions = export_folder is not None and label_manager.has_regions
    results = []
    for key in keys:
        data, properties = preprocessed_case(dataset, key)
        start = time.perf_counter()
        prediction = engine.forward(data)
        forward_seconds = time.perf_counter() - start
        exported = segmentation_in_input_geometry(
            prediction.segmentation_logits,
            plans_manager,
            configuration_manager,
            label_manager,
            properties,
            torch.get_num_threads(),
            return_probabilities=save_probabilities or keep_regions,
        )
        segmentation = exported[0] if save_probabilities or keep_regions else exported
        truth, _ = reader.read_seg(str(Path(gt_folder) / mask_file_name(key)))
        probabilities = torch.softmax(prediction.class_logits, 0)
        results.append(
            ValidatedCase(
                key,
                region_dice(segmentation, truth[0]),
                int(subtypes[key]),
                int(probabilities.argmax()),
                [float(p) for p in probabilities],
                forward_seconds,
                prediction.num_forward_passes,
                prediction.path,
                None if prediction.head_features is None else prediction.head_features.numpy(),
            )
        )
        if export_folder is not None:
            write_mask(segmentation, properties, Path(export_folder) / mask_file_name(key))
            if keep_regions:
                write_region_probabilities(exported[1], region_probabilities_path(export_folder, key))
            if save_probabilities:
                _write_probabilities(exported[1], properties, Path(export_folder) / key)
    return results


def reclassified(cases: Sequence[ValidatedCase], class_logits: torch.Tensor) -> list[ValidatedCase]:
    """``cases`` with the subtypes and probabilities of other class logits (cases, classes), in their order."""
    probabilities = torch.softmax(class_logits.float(), 1)
    return [
        replace(case, subtype_pred=int(p.argmax()), probabilities=[float(v) for v in p])
        for case, p in zip(cases, probabilities)
    ]


def _write_probabilities(probabilities: np.ndarray, properties: dict, truncated: Path) -> None:
    with atomic_path(truncated.with_name(f"{truncated.name}.npz")) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, probabilities=probabilities)
    with atomic_path(truncated.with_name(f"{truncated.name}.pkl")) as tmp, open(tmp, "wb") as handle:
        pickle.dump(properties, handle)


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


def write_validation_outputs(metrics: ValidationMetrics, folder: Path, gt_folder: Path) -> Evaluation:
    """Next to the exported masks: the subtype CSVs, the true subtypes, and nnunet-mtl's metrics of the
    masks in the original geometry (as ``nnunet-mtl evaluate`` computes them)."""
    folder = Path(folder)
    write_subtype_outputs(
        folder, {c.name: c.subtype_pred for c in metrics.cases}, {c.name: c.probabilities for c in metrics.cases}
    )
    write_subtype_csv(folder / TRUTH_LABELS, {c.name: c.subtype_true for c in metrics.cases})
    evaluation = evaluate_folder(folder, gt_folder, folder / TRUTH_LABELS, cases=[c.name for c in metrics.cases])
    write_evaluation(evaluation, folder)
    return evaluation
