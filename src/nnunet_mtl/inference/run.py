"""``nnunet-mtl predict``: a folder of CT images to masks and subtypes with a trained model folder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from nnunet_mtl.config import InferenceConfig
from nnunet_mtl.console import Progress
from nnunet_mtl.errors import require_device
from nnunet_mtl.inference.cases import check_output_folder, find_input_cases
from nnunet_mtl.inference.engine import PathChoice
from nnunet_mtl.inference.model import load_model
from nnunet_mtl.inference.predictor import CaseResult, MultitaskPredictor, folder_status
from nnunet_mtl.inference.shards import check_parts, part_of


def predict(
    in_dir: Path,
    out_dir: Path,
    model_dir: Path,
    folds: Sequence[int] | None = None,
    checkpoints: Sequence[str] = ("best",),
    device: str = "cpu",
    tta: bool | None = None,
    config: InferenceConfig | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    num_parts: int = 1,
    part_id: int = 0,
    postprocess: bool = True,
    path: PathChoice | None = None,
) -> tuple[MultitaskPredictor, list[CaseResult]]:
    """Check the inputs, the model folder and the output folder (in that order, before anything is
    predicted), then predict every case into ``out_dir`` (with ``num_parts`` > 1: part ``part_id`` of them,
    nnU-Net's split; the CSVs hold every case any part has finished); ``postprocess``: apply the model
    folder's postprocessing (``nnunet-mtl postprocess``), if it has one. ``tta`` (mirroring) and ``path``:
    where None, as the model folder's inference choice says (``inference/choice.py``)."""
    require_device(device)
    check_parts(num_parts, part_id)
    cases = find_input_cases(in_dir)
    model = load_model(model_dir, folds, checkpoints, device)
    check_output_folder(in_dir, out_dir)
    choice = model.inference_choice
    tta = choice.mirroring if tta is None else tta
    path = choice.path if path is None else path
    predictor = MultitaskPredictor(model, device, tta, config, path, warn=log, postprocess=postprocess)
    share = part_of(cases, num_parts, part_id)
    results = predictor.predict_folder(share, out_dir, overwrite=overwrite, progress=progress, log=log, all_cases=cases)
    return predictor, results


def status(in_dir: Path, out_dir: Path) -> tuple[list[str], list[str], int]:
    """Which cases of ``in_dir`` are finished in ``out_dir`` (by any part) and which are missing, and how many
    different settings the finished ones were predicted with; loads no model."""
    return folder_status(out_dir, find_input_cases(in_dir))
