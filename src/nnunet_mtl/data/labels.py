"""Label conventions: integer labels on disk, regions for training and scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_mtl.errors import InputError

BACKGROUND, PANCREAS, LESION = 0, 1, 2
VALID_LABELS = (BACKGROUND, PANCREAS, LESION)
NUM_SUBTYPES = 3
# Masks in the real data store label 1 as the float 1.0000152587890625 (1 + 2**-16).
LABEL_TOLERANCE = 0.01

# nnU-Net region training: each region is the set of labels it covers.
REGIONS: dict[str, tuple[int, ...]] = {"whole_pancreas": (PANCREAS, LESION), "lesion": (LESION,)}
NNUNET_LABELS = {"background": 0, "whole_pancreas": [PANCREAS, LESION], "pancreas_lesion": LESION}
REGIONS_CLASS_ORDER = [PANCREAS, LESION]


def round_labels(array: np.ndarray, path: Path) -> np.ndarray:
    """Integer label map (uint8) from a stored mask, refusing values that are not labels."""
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError(path, "mask contains NaN or infinite values")
        rounded = np.rint(array)
        deviation = np.abs(array - rounded)
        worst = int(np.argmax(deviation))
        if deviation.flat[worst] > LABEL_TOLERANCE:
            raise InputError(
                path,
                f"mask value {array.flat[worst]:.6g} is not an integer label "
                f"(more than {LABEL_TOLERANCE} from the nearest integer)",
            )
    else:
        rounded = array
    values = np.unique(rounded)
    unexpected = [v for v in values.tolist() if v not in VALID_LABELS]
    if unexpected:
        raise InputError(path, f"mask label {unexpected[0]:g} outside {{0, 1, 2}}")
    return rounded.astype(np.uint8)


def region_mask(labels: np.ndarray, region: str) -> np.ndarray:
    return np.isin(labels, REGIONS[region])
