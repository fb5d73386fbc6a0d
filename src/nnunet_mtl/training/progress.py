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
        log = self.my_fantastic_logging
        epochs = min(len(v) for v in log.values())
        if epochs == 0:
            return
        x = list(range(epochs))
        figure, axes = plt.subplots(5, 1, figsize=(12, 20), dpi=80)

        ax = axes[0]
        ax.plot(x, log["train_losses"][:epochs], "b-", label="loss_tr (total)")
        ax.plot(x, log["val_losses"][:epochs], "r-", label="loss_val (segmentation, patches)")
        twin = ax.twinx()
        twin.plot(x, log["mean_fg_dice"][:epochs], "g:", label="pseudo dice (patches)")
        twin.plot(x, log["ema_fg_dice"][:epochs], "g-", label="pseudo dice (mov. avg.)")
        ax.set_ylabel("loss")
        twin.set_ylabel("pseudo dice")
        ax.legend(loc="upper left")
        twin.legend(loc="upper right")

        ax = axes[1]
        ax.plot(x, log["train_seg_losses"][:epochs], "b-", label="segmentation loss (train)")
        ax.plot(x, log["train_cls_losses"][:epochs], "m-", label="classification loss (train)")
        ax.plot(x, log["val_cls_losses"][:epochs], "m:", label="classification loss (val patches)")
        ax.set_ylabel("loss")
        ax.legend(loc="upper right")

        ax = axes[2]
        points = [i for i in x if not math.isnan(log["wv_combined"][i])]
        for key, style, label in (
            ("wv_dice_whole", "go-", "whole pancreas Dice"),
            ("wv_dice_lesion", "ro-", "lesion Dice"),
            ("wv_macro_f1", "mo-", "subtype macro F1"),
            ("wv_combined", "ko-", "combined (selects checkpoint_best)"),
        ):
            ax.plot(points, [log[key][i] for i in points], style, label=label)
        if points:
            best = max(points, key=lambda i: log["wv_combined"][i])
            ax.axvline(best, color="k", ls="--", lw=1)
            ax.annotate(f"checkpoint_best: epoch {best}", (best, 0.02), rotation=90, va="bottom", ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("whole-volume validation")
        ax.legend(loc="upper left", fontsize="small")

        ax = axes[3]
        durations = [e - s for e, s in zip(log["epoch_end_timestamps"][:epochs], log["epoch_start_timestamps"])]
        ax.plot(x, durations, "b-", label="epoch duration")
        ax.set_ylim(0, max(durations) * 1.1 if durations else 1)
        ax.set_ylabel("time [s]")
        ax.legend(loc="upper right")

        ax = axes[4]
        ax.plot(x, log["lrs"][:epochs], "b-", label="learning rate")
        ax.set_ylabel("learning rate")
        ax.set_xlabel("epoch")
        ax.legend(loc="upper right")

        phase2 = next((i for i in x if log["phase"][i] == 2), None)
        for ax in axes:
            if phase2 is not None and phase2 > 0:
                ax.axvline(phase2 - 0.5, color="orange", ls="-.", lw=1.5)
            ax.grid(alpha=0.3)
        if phase2 is not None and phase2 > 0:
            axes[1].annotate("phase 2 (joint)", (phase2 - 0.5, axes[1].get_ylim()[1]), color="orange", va="top")
        figure.tight_layout()
        with atomic_path(Path(output_folder) / "progress.png") as tmp:
            figure.savefig(tmp, format="png")
        plt.close(figure)
