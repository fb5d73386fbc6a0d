"""Boundary and volume metrics of one region in physical units (MONAI's surface distances).

Conventions, per case and region:
- normalised surface distance (NSD) at a tolerance: the share of both surfaces within the tolerance of the
  other; undefined (null) when truth and prediction are both empty, 0 when only one is;
- Hausdorff distance at a percentile (HD95): undefined when either mask is empty (there is no distance to
  an empty surface); the number of such cases is reported next to the mean;
- volumes in millilitres (always defined); the volume difference is prediction minus truth.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from nnunet_mtl.data.labels import REGIONS, region_mask

# MONAI 1.5-1.6 warns about an argument its own surface functions pass (a process-wide filter: the
# metrics run in threads, where catch_warnings is not safe)
warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)


@dataclass(frozen=True)
class SurfaceMetrics:
    nsd: float  # NaN where undefined
    hd: float  # NaN where undefined, in mm
    volume_pred_ml: float
    volume_true_ml: float

    @property
    def volume_difference_ml(self) -> float:
        return self.volume_pred_ml - self.volume_true_ml


def _union_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of both masks grown by one voxel: surfaces and their distances are the same there
    as in the whole volume, at a fraction of the distance transform's cost on large crops."""
    coordinates = np.argwhere(a | b)
    low = np.maximum(coordinates.min(0) - 1, 0)
    high = np.minimum(coordinates.max(0) + 2, a.shape)
    return tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high))


def mask_surface_metrics(
    prediction: np.ndarray, truth: np.ndarray, spacing_zyx: tuple[float, ...], tolerance_mm: float, percentile: float
) -> SurfaceMetrics:
    """Metrics of two boolean (z, y, x) masks with voxel ``spacing_zyx`` in mm."""
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    volumes = (np.count_nonzero(prediction) * voxel_ml, np.count_nonzero(truth) * voxel_ml)
    pred_any, truth_any = volumes[0] > 0, volumes[1] > 0
    if not (pred_any and truth_any):
        return SurfaceMetrics(math.nan if not (pred_any or truth_any) else 0.0, math.nan, *volumes)
    box = _union_box(prediction, truth)
    pred = torch.from_numpy(np.ascontiguousarray(prediction[box]))[None, None]
    true = torch.from_numpy(np.ascontiguousarray(truth[box]))[None, None]
    spacing = tuple(float(s) for s in spacing_zyx)
    nsd = compute_surface_dice(pred, true, [float(tolerance_mm)], include_background=True, spacing=spacing)
    hd = compute_hausdorff_distance(pred, true, include_background=True, percentile=percentile, spacing=spacing)
    return SurfaceMetrics(float(nsd), float(hd), *volumes)


def region_surface_metrics(
    prediction: np.ndarray, truth: np.ndarray, spacing_zyx: tuple[float, ...], tolerance_mm: float, percentile: float
) -> dict[str, SurfaceMetrics]:
    """:func:`mask_surface_metrics` per region of two integer label maps."""
    return {
        region: mask_surface_metrics(
            region_mask(prediction, region), region_mask(truth, region), spacing_zyx, tolerance_mm, percentile
        )
        for region in REGIONS
    }
