"""Export the segmentation part of a multitask model as a stock nnU-Net model folder.

The result holds ``plans.json``, ``dataset.json`` and ``fold_F/<checkpoint>`` whose weights are those of
the plain nnU-Net network (trainer ``nnUNetTrainer``), so stock nnU-Net predicts with it::

    nnUNetv2_predict_from_modelfolder -i IMAGES -o OUT -m EXPORTED -f 0 -chk checkpoint_best.pth
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from nnunet_mtl.errors import InputError
from nnunet_mtl.io import check_staged_output_dir, staged_directory
from nnunet_mtl.model.checkpoint import (
    MODEL_FILES,
    check_compatible,
    load_checkpoint,
    read_model_json,
    save_checkpoint,
    segmentation_checkpoint,
)


def export_segmentation_model(
    model_dir: Path, out_dir: Path, folds: Sequence[int] = (0,), checkpoint_name: str = "checkpoint_best.pth"
) -> Path:
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not model_dir.is_dir():
        raise InputError(model_dir, "model folder not found")
    plans, dataset_json = (read_model_json(model_dir / name) for name in MODEL_FILES[:2])
    checkpoints = {}
    for fold in folds:
        path = model_dir / f"fold_{fold}" / checkpoint_name
        checkpoints[fold] = load_checkpoint(path)
        check_compatible(path, checkpoints[fold], plans, dataset_json)
    check_staged_output_dir(out_dir)
    with staged_directory(out_dir) as stage:
        for name in MODEL_FILES:
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, stage / name)
        for fold, checkpoint in checkpoints.items():
            save_checkpoint(segmentation_checkpoint(checkpoint), stage / f"fold_{fold}" / checkpoint_name)
    return out_dir
