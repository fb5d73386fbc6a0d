"""The lesion region's probability threshold, determined on the validation split like the mask steps.

nnU-Net labels a region where its sigmoid probability exceeds 0.5. A network trained for minutes on small,
low-contrast lesions can segment them systematically too small (README, "The lesion threshold"), and a lower
threshold then recovers Dice; on other data it may not. So the threshold is chosen per model on its validation
predictions, among ``PostprocessingConfig.lesion_thresholds``, and kept only where it helps.

The threshold moves the lesion's boundary inside the predicted whole pancreas and never the whole pancreas
itself: the whole pancreas is nnU-Net's (every region over 0.5), the lesion is where it holds a lesion
probability over the threshold. At 0.5 this is nnU-Net's own conversion, and the whole-pancreas Dice does not
depend on the threshold, so the threshold is chosen on the lesion's Dice alone.

The final validation stores each case's region probabilities in the original geometry, quantised to 1/255
(``<case>_regions.npz``, uint8, mostly zeros, compressed: 2-4 KB per phantom case of 32x48x48 voxels and
23-93 KB at the real median's 64x119x179, where float32 would hold 0.6 and 10.9 MB uncompressed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_mtl.data.labels import BACKGROUND, LESION, PANCREAS, REGIONS_CLASS_ORDER
from nnunet_mtl.io import atomic_path

DEFAULT_THRESHOLD = 0.5
REGION_PROBABILITIES_SUFFIX = "_regions.npz"
QUANTA = 255
LESION_CHANNEL = REGIONS_CLASS_ORDER.index(LESION)


def region_probabilities_path(folder: Path, name: str) -> Path:
    return Path(folder) / f"{name}{REGION_PROBABILITIES_SUFFIX}"


def write_region_probabilities(probabilities: np.ndarray, path: Path) -> None:
    """(regions, z, y, x) probabilities in [0, 1], quantised to uint8, written atomically."""
    quantised = np.rint(np.clip(probabilities, 0, 1) * QUANTA).astype(np.uint8)
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, probabilities=quantised)


def read_region_probabilities(path: Path) -> np.ndarray:
    """The quantised (regions, z, y, x) probabilities as uint8 (probability = value / 255)."""
    with np.load(path) as stored:
        return stored["probabilities"]


def thresholded_labels(probabilities: np.ndarray, threshold: float, scale: float = 1.0) -> np.ndarray:
    """The label map of (regions, z, y, x) region probabilities (times ``scale``: ``QUANTA`` for the stored
    ones): pancreas where any region is over 0.5, lesion inside it where the lesion is over ``threshold``."""
    gland = (probabilities > DEFAULT_THRESHOLD * scale).any(axis=0)
    labels = np.where(gland, PANCREAS, BACKGROUND).astype(np.uint8)
    labels[gland & (probabilities[LESION_CHANNEL] > threshold * scale)] = LESION
    return labels
