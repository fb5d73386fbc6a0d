"""What a report is made of: the training run's log, the metrics, the per-case files, a benchmark."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_mtl.data.layout import CHANNEL_SUFFIX
from nnunet_mtl.data.subtype_csv import PROBABILITIES_CSV, read_probabilities_csv
from nnunet_mtl.errors import InputError
from nnunet_mtl.inference.choice import UNDETERMINED, InferenceChoice
from nnunet_mtl.io import NIFTI_SUFFIX
from nnunet_mtl.model.checkpoint import CHECKPOINT_FILES, MultitaskState, load_checkpoint
from nnunet_mtl.postprocessing.plan import NONE as NO_POSTPROCESSING
from nnunet_mtl.postprocessing.plan import Postprocessing
from nnunet_mtl.training.progress import best_epoch_of

LOG_CHECKPOINTS = (CHECKPOINT_FILES["final"], CHECKPOINT_FILES["latest"])
VALIDATION_FOLDER = "validation"


@dataclass
class TrainingRun:
    trainer: str
    fold: int
    log: dict  # nnU-Net's logging lists plus ours, one value per epoch
    best_epoch: int | None  # the epoch checkpoint_best was saved at
    finished: bool  # checkpoint_final exists
    config: dict
    readout_fitted: bool = False  # checkpoint_best's (else the log checkpoint's) head has a fitted LDA readout
    readout_reads_statistics_only: bool = False  # ... which reads the intensity statistics alone

    @property
    def epochs(self) -> int:
        return min(len(v) for v in self.log.values())

    @property
    def phase2_start(self) -> int | None:
        return next((i for i, phase in enumerate(self.log["phase"]) if phase == 2), None)


@dataclass
class CaseFiles:
    prediction: Path | None = None
    truth: Path | None = None
    image: Path | None = None


@dataclass
class ReportSources:
    model_dir: Path
    run: TrainingRun
    metrics: dict  # as metrics.json of ``nnunet-mtl evaluate``
    metrics_origin: str
    probabilities: dict[str, list[float]] = field(default_factory=dict)
    files: dict[str, CaseFiles] = field(default_factory=dict)
    benchmark: dict | None = None
    postprocessing: Postprocessing = NO_POSTPROCESSING  # the model folder's (`nnunet-mtl postprocess`)
    inference_choice: InferenceChoice = UNDETERMINED  # the model folder's, made at the end of training


def load_training_run(model_dir: Path, fold: int | None) -> TrainingRun:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError(model_dir, "model folder not found")
    folds = sorted(
        int(p.name[5:]) for p in model_dir.glob("fold_*") if p.name[5:].isdigit() and _log_checkpoint(p) is not None
    )
    if not folds:
        raise InputError(model_dir, f"no fold_*/ with {' or '.join(LOG_CHECKPOINTS)} in the model folder")
    fold = folds[0] if fold is None else fold
    if fold not in folds:
        raise InputError(model_dir / f"fold_{fold}", f"no {' or '.join(LOG_CHECKPOINTS)} for this fold")
    fold_dir = model_dir / f"fold_{fold}"
    checkpoint_path = _log_checkpoint(fold_dir)
    checkpoint = load_checkpoint(checkpoint_path)
    state = MultitaskState.of(checkpoint)
    best_epoch = state.best_epoch
    deployed = checkpoint  # what predict uses by default
    if (fold_dir / CHECKPOINT_FILES["best"]).is_file():
        deployed = load_checkpoint(fold_dir / CHECKPOINT_FILES["best"])
        best_epoch = MultitaskState.of(deployed).best_epoch
    log = checkpoint["logging"]
    return TrainingRun(
        trainer=checkpoint.get("trainer_name", ""),
        fold=fold,
        log=log,
        best_epoch=best_epoch if best_epoch is not None else best_epoch_of(log),
        finished=checkpoint_path.name == LOG_CHECKPOINTS[0],
        config=state.config,
        readout_fitted=bool(deployed["network_weights"].get("head.readout_fitted", False)),
        readout_reads_statistics_only=_reads_statistics_only(deployed["network_weights"]),
    )


def _reads_statistics_only(weights: dict) -> bool:
    """A fitted readout with zero weight on every pooled stage's features (each stage has a LayerNorm)."""
    if not bool(weights.get("head.readout_fitted", False)):
        return False
    stages = sum(v.numel() for k, v in weights.items() if k.startswith("head.norms.") and k.endswith(".weight"))
    readout = weights["head.readout_weight"]
    return 0 < stages < readout.shape[1] and not bool(readout[:, :stages].any())


def _log_checkpoint(fold_dir: Path) -> Path | None:
    return next((fold_dir / n for n in LOG_CHECKPOINTS if (fold_dir / n).is_file()), None)


def read_probabilities(pred_dir: Path) -> dict[str, list[float]]:
    """Class probabilities per case from the CSV of ``predict`` or of the final validation (none: {})."""
    path = Path(pred_dir) / PROBABILITIES_CSV
    return read_probabilities_csv(path) if path.is_file() else {}


def index_images(folder: Path | None) -> dict[str, Path]:
    """``{case: <case>_0000.nii.gz}`` in a folder and its ``subtypeK/`` folders."""
    if folder is None or not Path(folder).is_dir():
        return {}
    suffix = CHANNEL_SUFFIX + NIFTI_SUFFIX
    return {p.name[: -len(suffix)]: p for p in Path(folder).rglob(f"*{suffix}") if not p.name.startswith(".")}


def index_masks(folder: Path | None) -> dict[str, Path]:
    """``{case: <case>.nii.gz}`` masks in a folder and its ``subtypeK/`` folders (images left out)."""
    if folder is None or not Path(folder).is_dir():
        return {}
    masks = Path(folder).rglob(f"*{NIFTI_SUFFIX}")
    return {
        p.name[: -len(NIFTI_SUFFIX)]: p
        for p in masks
        if not p.name.startswith(".") and not p.name.endswith(CHANNEL_SUFFIX + NIFTI_SUFFIX)
    }


def read_benchmark(path: Path | None) -> dict | None:
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        path = path / "benchmark.json"
    if not path.is_file():
        raise InputError(path, "benchmark results not found (expected benchmark.json of `nnunet-mtl benchmark`)")
    try:
        benchmark = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(path, f"not valid JSON: {error}") from None
    if not isinstance(benchmark, dict) or "methods" not in benchmark:
        raise InputError(path, "not a benchmark.json of `nnunet-mtl benchmark` (no methods)")
    return benchmark
