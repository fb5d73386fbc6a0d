"""The nnunet-mtl checkpoint format and the model folder around it: the one place that writes and reads them.

A checkpoint is nnU-Net's (``network_weights``, ``optimizer_state``, ``grad_scaler_state``, ``logging``,
``current_epoch``, ``init_args``, ``trainer_name``, ``inference_allowed_mirroring_axes``) plus ``format`` and a
``multitask`` block (:class:`MultitaskState`). It holds only tensors and plain values, so it is always read
with ``torch.load(weights_only=True)``: no pickled code runs. A model folder is nnU-Net's: ``plans.json``,
``dataset.json`` and ``fold_F/checkpoint_<name>.pth``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnunet_mtl.environment import environment_variable
from nnunet_mtl.errors import InputError
from nnunet_mtl.io import atomic_path
from nnunet_mtl.model.multitask import SEGMENTATION_PREFIX

FORMAT = "nnunet-mtl/2"  # 2: the head pools several encoder stages
CHECKPOINT_FILES = {"best": "checkpoint_best.pth", "final": "checkpoint_final.pth", "latest": "checkpoint_latest.pth"}
MODEL_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json")
FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"


@dataclass(frozen=True)
class MultitaskState:
    """What a checkpoint holds beyond nnU-Net's own entries."""

    config: dict  # MultitaskConfig.to_dict()
    class_weights: list[float] | None
    best_metric: float | None  # checkpoint selection (training/selection.py)
    best_epoch: int | None
    dataset_name: str | None
    labels: dict | None  # dataset.json's labels, checked against the model folder at prediction
    smoothed_metric: float | None = None  # the selection's moving average after the latest validation

    @classmethod
    def of(cls, checkpoint: Mapping) -> MultitaskState:
        return cls(**checkpoint["multitask"])


def to_plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays, tuples and devices turned into plain Python values."""
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.device):
        return str(value)
    return value


def training_checkpoint(
    *,
    network_weights: dict[str, torch.Tensor],
    optimizer_state: dict,
    grad_scaler_state: dict | None,
    logging: dict,
    current_epoch: int,
    init_args: dict,
    trainer_name: str,
    mirror_axes: tuple[int, ...] | None,
    multitask: MultitaskState,
) -> dict:
    """nnU-Net's checkpoint entries plus ours; ``current_epoch`` is the next epoch to train (nnU-Net's)."""
    return {
        "format": FORMAT,
        "network_weights": network_weights,
        "optimizer_state": optimizer_state,
        "grad_scaler_state": grad_scaler_state,
        "logging": to_plain(logging),
        "current_epoch": current_epoch,
        "init_args": to_plain(init_args),
        "trainer_name": trainer_name,
        "inference_allowed_mirroring_axes": to_plain(mirror_axes),
        "multitask": to_plain(asdict(multitask)),
    }


def save_checkpoint(checkpoint: dict, path: Path) -> None:
    """Write atomically and durably (ours, or the stock one of :func:`segmentation_checkpoint`): a kill
    leaves at most a temporary file, never a partial checkpoint."""
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as handle:
        torch.save(checkpoint, handle)
        handle.flush()
        os.fsync(handle.fileno())


def update_network_weights(path: Path, entries: Mapping[str, torch.Tensor]) -> None:
    """Replace some of a saved checkpoint's network weights (e.g. a readout fitted after training), atomically."""
    checkpoint = load_checkpoint(path)
    checkpoint["network_weights"].update({k: v.detach().cpu() for k, v in entries.items()})
    save_checkpoint(checkpoint, path)


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict:
    """An nnunet-mtl checkpoint, read weights-only; anything else is an InputError naming the file."""
    return read_checkpoint(path, map_location)[0]


def read_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> tuple[dict, str]:
    """:func:`load_checkpoint` and a digest of the very bytes loaded (sha256, 16 hex digits): the file is
    read once, so a checkpoint replaced while it is read cannot give weights of one and the digest of another.

    The archive's CRCs are checked first: ``torch.load`` reads damaged tensor data without complaint."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(path, f"cannot be read ({(err.strerror or str(err)).lower()})") from None
    problem = _archive_problem(data)
    if problem is not None:
        raise InputError(path, f"cannot be loaded as an nnunet-mtl checkpoint ({problem})")
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # not a torch file, or pickled code that weights-only refuses
        raise InputError(path, f"cannot be loaded as an nnunet-mtl checkpoint ({type(err).__name__})") from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT or "multitask" not in checkpoint:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise InputError(path, f"not an nnunet-mtl checkpoint (format {found!r}, expected {FORMAT!r})")
    return checkpoint, hashlib.sha256(data).hexdigest()[:16]


def _archive_problem(data: bytes) -> str | None:
    """What is wrong with a torch (zip) archive's bytes, or None."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError):  # OSError: zlib's, for a damaged compressed member
        return "truncated, or not a torch archive"
    return None if damaged is None else f"corrupt: checksum mismatch in {damaged}"


def load_resume_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> tuple[dict, Path]:
    """The checkpoint to resume from and its file: ``path``, or for ``checkpoint_latest`` the newer
    ``checkpoint_best`` where one exists (a kill between the two saves of one epoch)."""
    path = Path(path)
    checkpoint = load_checkpoint(path, map_location)
    best = path.with_name(CHECKPOINT_FILES["best"])
    if path.name == CHECKPOINT_FILES["latest"] and best.is_file():
        candidate = load_checkpoint(best, map_location)
        if candidate["current_epoch"] > checkpoint["current_epoch"]:
            return candidate, best
    return checkpoint, path


def read_model_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(path, "missing from the model folder")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(path, "not valid JSON") from None


def check_compatible(path: Path, checkpoint: dict, plans: dict, dataset_json: dict) -> None:
    """Refuse a checkpoint trained on another dataset or label set than its model folder's."""
    state = MultitaskState.of(checkpoint)
    if state.dataset_name not in (None, plans.get("dataset_name")):
        raise InputError(
            path, f"trained on dataset {state.dataset_name}, but the model folder is {plans.get('dataset_name')}"
        )
    if state.labels is not None and state.labels != dataset_json.get("labels"):
        raise InputError(path, "its label set differs from the model folder's dataset.json")


def available_folds(model_dir: Path, checkpoint_file: str) -> list[int]:
    """The folds of a model folder that hold ``checkpoint_file`` (nnU-Net's own detection, quietly)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    with contextlib.redirect_stdout(io.StringIO()):
        return sorted(nnUNetPredictor.auto_detect_available_folds(str(model_dir), checkpoint_file))


def segmentation_weights(network_weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The plain nnU-Net network's weights out of a multitask network's, under the stock names."""
    return {
        key[len(SEGMENTATION_PREFIX) :]: value
        for key, value in network_weights.items()
        if key.startswith(SEGMENTATION_PREFIX)
    }


def segmentation_checkpoint(checkpoint: dict) -> dict:
    """A stock nnU-Net checkpoint (trainer ``nnUNetTrainer``) of the segmentation part."""
    return {
        "network_weights": segmentation_weights(checkpoint["network_weights"]),
        "trainer_name": "nnUNetTrainer",
        "init_args": {"configuration": checkpoint["init_args"]["configuration"]},
        "inference_allowed_mirroring_axes": checkpoint.get("inference_allowed_mirroring_axes"),
        "current_epoch": checkpoint.get("current_epoch"),
    }


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every ``torch.load`` in the block is weights-only, whatever its ``weights_only`` argument.

    For stock nnU-Net code that loads with ``weights_only=False`` (``nnUNetPredictor`` in ``benchmark``);
    torch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` overrides the argument. It sets a process-wide variable: use it
    in a process of its own (as ``benchmark`` does), not around code other threads run at the same time.
    """
    with environment_variable(FORCE_WEIGHTS_ONLY, "1"):
        yield
