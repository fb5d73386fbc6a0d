"""Case overlays: CT in an abdominal window with pancreas and lesion contours, truth beside prediction."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from nnunet_mtl.data.labels import region_mask, round_labels
from nnunet_mtl.io import array_of, atomic_path, read_volume

WINDOW_LEVEL, WINDOW_WIDTH = 40.0, 400.0  # abdominal soft-tissue window (HU)
CONTOURS = (("whole_pancreas", "#2ecc40", "pancreas"), ("lesion", "#ff4136", "lesion"))


def lesion_slice(truth: np.ndarray, prediction: np.ndarray) -> int:
    """The axial slice with most lesion in the truth (else in the prediction, else most pancreas)."""
    for labels, region in ((truth, "lesion"), (prediction, "lesion"), (truth, "whole_pancreas")):
        counts = region_mask(labels, region).sum(axis=(1, 2))
        if counts.any():
            return int(counts.argmax())
    return truth.shape[0] // 2


def save_overlay(image_path: Path, truth_path: Path, prediction_path: Path, title: str, path: Path) -> int:
    """Write the overlay PNG; returns the slice index shown."""
    image = read_volume(image_path)
    ct = array_of(image).astype(np.float32)
    truth = round_labels(array_of(read_volume(truth_path)), truth_path)
    prediction = round_labels(array_of(read_volume(prediction_path)), prediction_path)
    z = lesion_slice(truth, prediction)
    spacing_x, spacing_y = image.GetSpacing()[:2]
    low, high = WINDOW_LEVEL - WINDOW_WIDTH / 2, WINDOW_LEVEL + WINDOW_WIDTH / 2

    figure, axes = plt.subplots(1, 2, figsize=(8, 4.4), dpi=100)
    for axis, labels, name in ((axes[0], truth, "truth"), (axes[1], prediction, "prediction")):
        axis.imshow(ct[z], cmap="gray", vmin=low, vmax=high, aspect=spacing_y / spacing_x, interpolation="nearest")
        for region, colour, _ in CONTOURS:
            mask = region_mask(labels[z], region)
            if mask.any():
                axis.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
        axis.set_title(name)
        axis.axis("off")
    handles = [Line2D([], [], color=colour, label=label) for _, colour, label in CONTOURS]
    figure.legend(handles=handles, loc="lower center", ncol=2, frameon=False)
    figure.suptitle(f"{title} (axial slice {z}, window L{WINDOW_LEVEL:g}/W{WINDOW_WIDTH:g})", fontsize=10)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    with atomic_path(Path(path)) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return z
