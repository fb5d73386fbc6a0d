"""``nnunet-mtl predict``: a folder of CT images to masks and subtypes with a trained model folder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from nnunet_mtl.config import InferenceConfig
from nnunet_mtl.console import Progress
from nnunet_mtl.errors import require_device
from nnunet_mtl.inference.cases import check_output_folder, find_input_cases
from nnunet_mtl.inference.model import load_model
from nnunet_mtl.inference.predictor import CaseResult, MultitaskPredictor


def predict(
    in_dir: Path,
    out_dir: Path,
    model_dir: Path,
    folds: Sequence[int] | None = None,
    checkpoints: Sequence[str] = ("best",),
    device: str = "cpu",
    tta: bool = False,
    config: InferenceConfig | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    postprocess: bool = True,
) -> tuple[MultitaskPredictor, list[CaseResult]]:
    """Check the inputs, the model folder and the output folder (in that order, before anything is
    predicted), then predict every case into ``out_dir``; ``postprocess``: apply the model folder's
    postprocessing (``nnunet-mtl postprocess``), if it has one."""
    require_device(device)
    cases = find_input_cases(in_dir)
    model = load_model(model_dir, folds, checkpoints, device)
    check_output_folder(in_dir, out_dir)
    predictor = MultitaskPredictor(model, device, tta, config, warn=log, postprocess=postprocess)
    return predictor, predictor.predict_folder(cases, out_dir, overwrite=overwrite, progress=progress, log=log)
