"""nnU-Net's local logger with both tasks' curves, and a progress.png that shows them."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from nnunetv2.training.logging.nnunet_logger import LocalLogger

from nnunet_mtl.io import atomic_path

MULTITASK_KEYS = (
    "train_seg_losses",
    "train_cls_losses",
    "val_cls_losses",
    "phase",
    "wv_dice_whole",
    "wv_dice_lesion",
    "wv_macro_f1",
    "wv_combined",
)
NAN = float("nan")


class MultitaskLocalLogger(LocalLogger):
    """One value per epoch for nnU-Net's keys and ours; whole-volume metrics are NaN between validations."""

    def __init__(self, verbose: bool = False):
        super().__init__(verbose)
        self.my_fantastic_logging.update({key: [] for key in MULTITASK_KEYS})

    def load_checkpoint(self, checkpoint: dict) -> None:
        super().load_checkpoint({**{key: [] for key in MULTITASK_KEYS}, **checkpoint})

    def plot_progress_png(self, output_folder) -> None:
        if min(len(v) for v in self.my_fantastic_logging.values()) > 0:
            plot_training_curves(self.my_fantastic_logging, Path(output_folder) / "progress.png")


def _validated_epochs(log: dict, epochs: int) -> list[int]:
    return [i for i in range(epochs) if not math.isnan(log["wv_combined"][i])]


def best_epoch_of(log: dict) -> int | None:
    """The validation epoch with the highest combined metric (what selects ``checkpoint_best``)."""
    points = _validated_epochs(log, len(log["wv_combined"]))
    return max(points, key=lambda i: log["wv_combined"][i]) if points else None


def plot_training_curves(log: dict, path: Path, best_epoch: int | None = None) -> None:
    """Both tasks' losses, Dice per region, subtype F1, learning rate and epoch time, with the phase
    boundary and the selected checkpoint marked (``best_epoch``; default: highest combined metric)."""
    epochs = min(len(v) for v in log.values())
    x = list(range(epochs))
    points = _validated_epochs(log, epochs)
    best = best_epoch_of(log) if best_epoch is None else best_epoch
    figure, axes = plt.subplots(5, 1, figsize=(10, 17), dpi=80, sharex=True)

    ax = axes[0]
    ax.plot(x, log["train_losses"][:epochs], "b-", label="total (train)")
    ax.plot(x, log["train_seg_losses"][:epochs], "c-", label="segmentation (train)")
    ax.plot(x, log["val_losses"][:epochs], "c:", label="segmentation (validation patches)")
    ax.plot(x, log["train_cls_losses"][:epochs], "m-", label="classification (train)")
    ax.plot(x, log["val_cls_losses"][:epochs], "m:", label="classification (validation patches)")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right", fontsize="small")

    ax = axes[1]
    ax.plot(points, [log["wv_dice_whole"][i] for i in points], "go-", label="whole pancreas (whole volume)")
    ax.plot(points, [log["wv_dice_lesion"][i] for i in points], "ro-", label="lesion (whole volume)")
    per_region = log["dice_per_class_or_region"][:epochs]
    for k, (style, name) in enumerate((("g:", "whole pancreas"), ("r:", "lesion"))):
        if per_region and len(per_region[0]) > k:
            ax.plot(x, [v[k] for v in per_region], style, alpha=0.6, label=f"{name} (pseudo Dice, patches)")
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice")
    ax.legend(loc="lower right", fontsize="small")

    ax = axes[2]
    ax.plot(points, [log["wv_macro_f1"][i] for i in points], "mo-", label="subtype macro F1")
    ax.plot(points, [log["wv_combined"][i] for i in points], "ko-", label="combined (selects checkpoint_best)")
    ax.set_ylim(0, 1)
    ax.set_ylabel("validation")
    ax.legend(loc="lower center", fontsize="small")

    ax = axes[3]
    ax.plot(x, log["lrs"][:epochs], "b-", label="learning rate (shared network; the head decays from its own rate)")
    ax.set_ylabel("learning rate")
    ax.legend(loc="upper right", fontsize="small")

    ax = axes[4]
    durations = [e - s for e, s in zip(log["epoch_end_timestamps"][:epochs], log["epoch_start_timestamps"])]
    ax.plot(x, durations, "b-", label="epoch duration")
    ax.set_ylim(0, max(durations) * 1.1 if durations else 1)
    ax.set_ylabel("time [s]")
    ax.set_xlabel("epoch")
    ax.legend(loc="upper right", fontsize="small")

    phase2 = next((i for i in x if log["phase"][i] == 2), None)
    for ax in axes:
        if phase2 is not None and phase2 > 0:
            ax.axvline(phase2 - 0.5, color="orange", ls="-.", lw=1.5)
        if best is not None:
            ax.axvline(best, color="k", ls="--", lw=1)
        ax.grid(alpha=0.3)
    if phase2 is not None and phase2 > 0:
        axes[0].annotate(" phase 2 (joint)", (phase2 - 0.5, axes[0].get_ylim()[1]), color="orange", va="top")
    if best is not None:
        right_half = best > (epochs - 1) / 2
        label = f"checkpoint_best: epoch {best} " if right_half else f" checkpoint_best: epoch {best}"
        axes[2].annotate(label, (best, 0.97), va="top", ha="right" if right_half else "left")
    figure.tight_layout()
    with atomic_path(Path(path)) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
