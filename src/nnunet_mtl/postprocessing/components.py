"""Connected-component steps on a label map (0 background, 1 pancreas, 2 lesion), with nnU-Net's own
component helpers. Each step is kept only where the validation split says it helps (``determine.py``):

- ``keep_largest_gland``: only the largest connected component of the whole pancreas {1, 2} is kept
  (nnU-Net's "keep the largest foreground region"); lesions outside it go with it;
- ``drop_lesion_outside_gland``: lesion voxels outside the largest whole-pancreas component become
  background, the gland's other islands stay (for a gland that is truly split);
- ``keep_largest_lesion``: only the largest lesion component is kept; the other lesion voxels become
  pancreas (not background as in nnU-Net's per-region step: they lie in the gland, and the whole
  pancreas region is scored too).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STEPS = ("keep_largest_gland", "drop_lesion_outside_gland", "keep_largest_lesion")
GLAND = (1, 2)
LESION = 2


def _largest(mask: np.ndarray) -> np.ndarray:
    from acvl_utils.morphology.morphology_helper import remove_all_but_largest_component

    return remove_all_but_largest_component(mask) if mask.any() else mask


def apply_step(segmentation: np.ndarray, step: str) -> np.ndarray:
    """A new label map (the input is not changed)."""
    from nnunetv2.postprocessing.remove_connected_components import (
        remove_all_but_largest_component_from_segmentation,
    )

    if step == "keep_largest_gland":
        return remove_all_but_largest_component_from_segmentation(segmentation, GLAND, background_label=0)
    if step == "drop_lesion_outside_gland":
        result = np.copy(segmentation)
        result[(segmentation == LESION) & ~_largest(segmentation > 0)] = 0
        return result
    if step == "keep_largest_lesion":
        return remove_all_but_largest_component_from_segmentation(segmentation, LESION, background_label=1)
    raise ValueError(f"unknown postprocessing step {step!r} (known: {', '.join(STEPS)})")


def apply_steps(segmentation: np.ndarray, steps: Sequence[str]) -> np.ndarray:
    for step in steps:
        segmentation = apply_step(segmentation, step)
    return segmentation
