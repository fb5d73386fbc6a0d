"""A lesion in every case, where the data says every case has one.

In the task's data every case has a lesion (its subtype is the lesion's). A network trained for minutes misses
the faintest ones outright (README, "How conspicuous the test lesions are"): the lesion region stays under the
threshold everywhere, and the case scores lesion Dice 0. Where every labelled case of the data set has a lesion,
an empty prediction is known to be wrong, and any guess scores at least as well. So where the predicted lesion
is absent (under the evaluation's ``lesion_min_volume_mm3``), the lesion also takes the most likely place the
network saw: inside the predicted gland, the connected voxels whose lesion probability is at least
``lesion_fallback_relative`` times the gland's highest, around that highest voxel (a half-maximum region, free
of any absolute probability). The gland itself does not change, and neither does a case whose lesion was found.

Where some labelled case has no lesion, nothing is added: there an empty prediction can be right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from nnunet_mtl.config import EVALUATION, POSTPROCESSING
from nnunet_mtl.data.labels import LESION
from nnunet_mtl.evaluation.detection import lesion_present
from nnunet_mtl.io import NIFTI_SUFFIX


def lesion_ml(labels: np.ndarray, spacing: Sequence[float]) -> float:
    return float(np.count_nonzero(labels == LESION) * np.prod(spacing) / 1000.0)


def with_lesion(
    labels: np.ndarray,
    lesion_probability: np.ndarray,
    spacing: Sequence[float],
    relative: float = POSTPROCESSING.lesion_fallback_relative,
) -> np.ndarray:
    """``labels`` where their lesion is present; else a copy whose lesion also holds the half-maximum region
    around the gland's most likely lesion voxel (any scale of ``lesion_probability``: float or quantised)."""
    gland = labels > 0
    if lesion_present(lesion_ml(labels, spacing), EVALUATION) or not gland.any():
        return labels
    inside = np.where(gland, lesion_probability, 0).astype(np.float32, copy=False)
    peak = inside.max()
    if peak <= 0:  # no voxel the network gives any lesion probability (to the stored 1/255): nothing to go by
        return labels
    components, _ = ndimage.label(inside >= relative * peak)
    centre = np.unravel_index(int(np.argmax(inside)), inside.shape)
    result = labels.copy()
    result[components == components[centre]] = LESION
    return result


@dataclass(frozen=True)
class LesionPrevalence:
    """How many labelled cases have a lesion (at the evaluation's minimum volume)."""

    cases: int
    with_lesion: int

    @property
    def every_case(self) -> bool:
        return self.cases > 0 and self.with_lesion == self.cases


def lesion_prevalence(gt_folder: Path) -> LesionPrevalence:
    """Over every mask in nnU-Net's ``gt_segmentations`` (training and validation cases of all folds)."""
    from nnunet_mtl.evaluation.evaluate import read_labels

    masks = sorted(Path(gt_folder).glob(f"*{NIFTI_SUFFIX}"))
    found = 0
    for mask in masks:
        image, labels = read_labels(mask)
        found += lesion_present(lesion_ml(labels, image.GetSpacing()), EVALUATION)
    return LesionPrevalence(len(masks), found)
