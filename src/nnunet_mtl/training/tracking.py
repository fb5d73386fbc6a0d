"""TensorBoard event files of both tasks' curves, as one more logger behind nnU-Net's ``MetaLogger``.

nnU-Net's ``MetaLogger`` forwards every ``log(key, value, epoch)`` to its extra loggers; this one writes
the scalars to ``<fold folder>/tensorboard/`` (view with ``tensorboard --logdir <model folder>``).
Weights & Biases needs nothing of ours: nnU-Net's own ``WandbLogger`` receives the same keys when
``nnUNet_wandb_enabled=1`` (``nnunet-mtl train --wandb`` sets it, offline by default).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from nnunet_mtl.errors import InputError

TENSORBOARD_FOLDER = "tensorboard"
TAGS = {
    "train_losses": "loss/train_total",
    "train_seg_losses": "loss/train_segmentation",
    "train_cls_losses": "loss/train_classification",
    "val_losses": "loss/val_segmentation_patches",
    "val_cls_losses": "loss/val_classification_patches",
    "mean_fg_dice": "pseudo_dice_patches/mean",
    "ema_fg_dice": "pseudo_dice_patches/moving_average",
    "dice_per_class_or_region": "pseudo_dice_patches/region",
    "lrs": "learning_rate",
    "phase": "phase",
    "wv_dice_whole": "whole_volume_validation/dice_whole_pancreas",
    "wv_dice_lesion": "whole_volume_validation/dice_lesion",
    "wv_macro_f1": "whole_volume_validation/subtype_macro_f1",
    "wv_combined": "whole_volume_validation/combined",
}


class TensorBoardLogger:
    """Scalars per epoch; NaN (no whole-volume validation that epoch) is left out, timestamps too.

    The writer opens on the first value, so a resumed run purges the events at and after its first
    epoch instead of duplicating them.
    """

    def __init__(self, output_folder: str | Path):
        self.log_dir = Path(output_folder) / TENSORBOARD_FOLDER
        self._writer = None

    def _writer_from(self, step: int):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir), purge_step=step)
        return self._writer

    def update_config(self, config: dict) -> None:
        pass

    def log(self, key: str, value: Any, step: int) -> None:
        if key == "epoch_end_timestamps" and self._writer is not None:
            self._writer.flush()  # an epoch's curves reach disk when it ends
        tag = TAGS.get(key.split("/")[0])
        if tag is None:
            return
        if key.startswith("dice_per_class_or_region/"):  # MetaLogger splits lists into key/class_i
            tag = f"{tag}_{key.rsplit('_', 1)[1]}"
        value = float(value)
        if math.isfinite(value):
            self._writer_from(step).add_scalar(tag, value, step)

    def log_summary(self, key: str, value: Any) -> None:
        pass

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def enable_wandb(project: str = "nnunet-mtl") -> None:
    """Turn on nnU-Net's own W&B logger, offline unless ``nnUNet_wandb_mode`` says otherwise.

    An offline run lands in ``<fold folder>/wandb/``; ``wandb sync`` uploads it later.
    """
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise InputError(None, "--wandb needs the wandb package: pip install 'nnunet-mtl[wandb]'") from None
    os.environ["nnUNet_wandb_enabled"] = "1"  # noqa: SIM112 - nnU-Net's name
    os.environ.setdefault("nnUNet_wandb_mode", "offline")
    os.environ.setdefault("nnUNet_wandb_project", project)
