"""Export the segmentation part of a multitask model as a stock nnU-Net model folder.

The result holds ``plans.json``, ``dataset.json`` and ``fold_F/<checkpoint>`` whose weights are those of
the plain nnU-Net network (trainer ``nnUNetTrainer``), so stock nnU-Net predicts with it::

    nnUNetv2_predict_from_modelfolder -i IMAGES -o OUT -m EXPORTED -f 0 -chk checkpoint_best.pth
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from nnunet_mtl.errors import InputError
from nnunet_mtl.io import atomic_path, check_staged_output_dir, staged_directory
from nnunet_mtl.model.multitask import SEGMENTATION_PREFIX

MODEL_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json")


def load_multitask_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(path, f"cannot be loaded as an nnunet-mtl checkpoint ({type(err).__name__})") from None
    if not isinstance(checkpoint, dict) or "multitask" not in checkpoint:
        raise InputError(path, "not an nnunet-mtl multitask checkpoint")
    return checkpoint


def segmentation_checkpoint(checkpoint: dict) -> dict:
    weights = {
        key[len(SEGMENTATION_PREFIX) :]: value
        for key, value in checkpoint["network_weights"].items()
        if key.startswith(SEGMENTATION_PREFIX)
    }
    return {
        "network_weights": weights,
        "trainer_name": "nnUNetTrainer",
        "init_args": {"configuration": checkpoint["init_args"]["configuration"]},
        "inference_allowed_mirroring_axes": checkpoint.get("inference_allowed_mirroring_axes"),
        "current_epoch": checkpoint.get("current_epoch"),
    }


def export_segmentation_model(
    model_dir: Path, out_dir: Path, folds: Sequence[int] = (0,), checkpoint_name: str = "checkpoint_best.pth"
) -> Path:
    from nnunet_mtl.inference.model import check_compatible, read_model_json

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not model_dir.is_dir():
        raise InputError(model_dir, "model folder not found")
    plans, dataset_json = (read_model_json(model_dir / name) for name in MODEL_FILES[:2])
    checkpoints = {}
    for fold in folds:
        path = model_dir / f"fold_{fold}" / checkpoint_name
        checkpoints[fold] = load_multitask_checkpoint(path)
        check_compatible(path, checkpoints[fold], plans, dataset_json)
    check_staged_output_dir(out_dir)
    with staged_directory(out_dir) as stage:
        for name in MODEL_FILES:
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, stage / name)
        for fold, checkpoint in checkpoints.items():
            (stage / f"fold_{fold}").mkdir()
            with atomic_path(stage / f"fold_{fold}" / checkpoint_name) as tmp:
                torch.save(segmentation_checkpoint(checkpoint), tmp)
    return out_dir
