"""Boundary metrics against a hand-checkable volume and an independent computation (scipy's exact distance
transform on the masks' surfaces)."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from nnunet_mtl.evaluation.surface import mask_surface_metrics, region_surface_metrics

SPACING = (2.0, 0.7, 0.9)  # (z, y, x) mm, anisotropic


def _surface(mask):
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1))


def _independent(prediction, truth, spacing, tolerance, percentile):
    """NSD and percentile Hausdorff from each surface's exact Euclidean distances to the other surface."""
    sp, st = _surface(prediction), _surface(truth)
    to_truth = ndimage.distance_transform_edt(~st, sampling=spacing)[sp]
    to_prediction = ndimage.distance_transform_edt(~sp, sampling=spacing)[st]
    nsd = (np.sum(to_truth <= tolerance) + np.sum(to_prediction <= tolerance)) / (len(to_truth) + len(to_prediction))
    hd = max(np.percentile(to_truth, percentile), np.percentile(to_prediction, percentile))
    return nsd, hd


def _box(shape, low, high):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(lo, hi) for lo, hi in zip(low, high))] = True
    return mask


def test_two_boxes_at_a_known_distance():
    truth = _box((30, 40, 40), (8, 10, 10), (16, 30, 30))
    prediction = np.roll(truth, 3, axis=0)  # 3 slices of 2 mm: the far faces are 6 mm apart
    exact = mask_surface_metrics(prediction, truth, SPACING, tolerance_mm=6.0, percentile=100)
    assert exact.hd == pytest.approx(6.0)
    assert exact.nsd == pytest.approx(1.0)  # every surface point within 6 mm of the other surface
    tight = mask_surface_metrics(prediction, truth, SPACING, tolerance_mm=1.0, percentile=95)
    assert 0 < tight.nsd < 1
    voxel_ml = np.prod(SPACING) / 1000
    assert exact.volume_true_ml == pytest.approx(truth.sum() * voxel_ml)
    assert exact.volume_difference_ml == pytest.approx(0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_an_independent_computation_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(24, 40, 36)), 3)
    truth = field > 0.02
    prediction = ndimage.binary_dilation(truth, iterations=1) ^ (rng.random(truth.shape) < 0.02)
    for tolerance, percentile in ((2.0, 95), (1.0, 50)):
        ours = mask_surface_metrics(prediction, truth, SPACING, tolerance, percentile)
        nsd, hd = _independent(prediction, truth, SPACING, tolerance, percentile)
        assert ours.nsd == pytest.approx(nsd, abs=1e-6)
        assert ours.hd == pytest.approx(hd, abs=1e-4)


def test_cropping_to_the_masks_changes_nothing():
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    truth = _box((40, 60, 60), (10, 20, 15), (18, 35, 30))
    prediction = _box((40, 60, 60), (11, 22, 14), (20, 33, 31))
    ours = mask_surface_metrics(prediction, truth, SPACING, 2.0, 95)
    p, t = torch.from_numpy(prediction)[None, None], torch.from_numpy(truth)[None, None]
    assert ours.nsd == pytest.approx(float(compute_surface_dice(p, t, [2.0], include_background=True, spacing=SPACING)))
    full_hd = compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=SPACING)
    assert ours.hd == pytest.approx(float(full_hd))


def test_empty_region_conventions():
    empty = np.zeros((10, 12, 12), bool)
    mask = _box(empty.shape, (2, 2, 2), (6, 8, 8))
    both = mask_surface_metrics(empty, empty, SPACING, 2.0, 95)
    assert math.isnan(both.nsd) and math.isnan(both.hd) and both.volume_difference_ml == 0
    for prediction, truth in ((mask, empty), (empty, mask)):
        one = mask_surface_metrics(prediction, truth, SPACING, 2.0, 95)
        assert one.nsd == 0.0 and math.isnan(one.hd)
    assert mask_surface_metrics(mask, empty, SPACING, 2.0, 95).volume_difference_ml > 0


def test_regions_of_a_label_map():
    truth = np.zeros((12, 16, 16), np.uint8)
    truth[2:10, 3:13, 3:13] = 1
    truth[4:7, 5:9, 5:9] = 2
    prediction = truth.copy()
    prediction[truth == 2] = 1  # lesion missed, gland identical
    metrics = region_surface_metrics(prediction, truth, SPACING, 2.0, 95)
    assert metrics["whole_pancreas"].nsd == 1.0 and metrics["whole_pancreas"].hd == 0.0
    assert metrics["lesion"].nsd == 0.0 and math.isnan(metrics["lesion"].hd)
