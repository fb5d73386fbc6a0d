"""Segmentation logits and subtype logits for one preprocessed case.

Two paths, of which ``inference/engine.py`` chooses one per case by an estimate of its peak memory:

* **whole volume** - pad each axis to the network's divisibility (the product of its pooling strides on
  that axis), and at least to the patch size, run ONE forward pass, crop back. The subtype logits are
  the head's output for that pass. Padding a small volume up to the patch makes the pass identical to
  nnU-Net's single tile: the network was trained on patches, and its instance normalisation sees the
  padded zeros.
* **sliding window** - nnU-Net's tiling (tile = patch size, step 0.5 by default) with its Gaussian
  weighting for the segmentation.

The subtype logits come from ONE application of the head's MLP per case, on the stage features pooled
over every pass of that case (tiles and flips) and on the intensity statistics of the whole stitched case::

      pooled_s = sum_t sum_v g_t(v) w_t(v) f_ts(v) / sum_t sum_v g_t(v) w_t(v)     for each pooled stage s
      class_logits = MLP(LayerNorm_s(pooled_s) for each s, statistics(image, stitched segmentation))

where ``f_ts`` are tile ``t``'s features of stage ``s``, ``w_t`` the pooling weight of the structure the
head pools over (the predicted lesion where it reaches the head's threshold; the gland where the case's
lesion is empty or tiny; 1 for ``"avg"``), and ``g_t(v)`` tile ``t``'s share of voxel ``v``: nnU-Net's
Gaussian importance of the tile there divided by the sum over the tiles covering ``v`` (the same blending
as the segmentation; 1 on the whole-volume path and for a single tile), all on the stage's grid. So every
voxel of the case counts once, and a lesion split across tiles is pooled as one lesion, as in a single
pass over the whole volume; averaging per-tile logits instead would classify fragments.

Mirroring (``mirror_axes``) averages the segmentation logits over all flips, as nnU-Net does, and adds
every flip's pooling sums to the case's.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

from nnunet_mtl.model.head import PooledFeatures, add_pooled
from nnunet_mtl.model.multitask import MultitaskUNet

# Peak memory of a whole-volume forward pass (fp32, no grad) = voxels x first-stage features x BYTES + a
# fixed overhead. Measured by benchmarks/forward_memory.py on PlainConvUNet (tiny and default plans) and
# ResEnc-M: 30.3-32.9 bytes per voxel and feature at 0.8-3.5 M voxels, plus about 50 MiB. The
# constants keep about 10% above the largest measurement.
BYTES_PER_VOXEL_PER_FEATURE = 36
FORWARD_OVERHEAD_BYTES = 96 * 2**20


@dataclass(frozen=True)
class CasePrediction:
    segmentation_logits: torch.Tensor  # (channels, *spatial) float32 on the CPU
    class_logits: torch.Tensor  # (num_subtypes,) float32 on the CPU
    path: str  # "whole" or "sliding"
    num_forward_passes: int
    head_features: torch.Tensor | None = None  # (features,) what the head's readout classified; one network only


def divisibility(strides: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Per-axis factor that every input size must be a multiple of."""
    return tuple(int(v) for v in np.prod(np.array(strides), axis=0))


def estimated_forward_bytes(spatial_shape: Sequence[int], first_stage_features: int) -> int:
    voxels = int(np.prod(spatial_shape))
    return voxels * first_stage_features * BYTES_PER_VOXEL_PER_FEATURE + FORWARD_OVERHEAD_BYTES


def _mirror_combinations(mirror_axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    axes = [a + 2 for a in (mirror_axes or ())]
    return [()] + [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]


class _CaseAccumulator:
    """Sums of the pooled features of every pass of one case."""

    def __init__(self) -> None:
        self.pooled: PooledFeatures | None = None
        self.passes = 0

    def evidence_with_mirroring(
        self, network: MultitaskUNet, x: torch.Tensor, mirror_axes, spatial_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Segmentation logits of ``x`` averaged over the flips (float32, on x's device); every flip's
        pooled features are added to the case's."""
        combos = _mirror_combinations(mirror_axes)
        segmentation = None
        for axes in combos:
            weights = spatial_weights
            if axes and weights is not None:
                weights = torch.flip(weights, axes)
            evidence = network.evidence(torch.flip(x, axes) if axes else x, weights)
            seg = torch.flip(evidence.segmentation, axes) if axes else evidence.segmentation
            segmentation = seg.float() if segmentation is None else segmentation + seg.float()
            self.pooled = add_pooled(self.pooled, PooledFeatures(*(t.float().cpu() for t in evidence.pooled)))
        self.passes += len(combos)
        return segmentation / len(combos)

    def classify(
        self, network: MultitaskUNet, x: torch.Tensor, segmentation: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The case's head features and class logits (float32, on the CPU)."""
        device = next(network.parameters()).device
        pooled = PooledFeatures(*(t.to(device) for t in self.pooled))
        features = network.case_features(x.to(device), segmentation.to(device), pooled)
        return features[0].float().cpu(), network.head.readout(features)[0].float().cpu()


@torch.inference_mode()
def predict_whole_volume(
    network: MultitaskUNet,
    data: torch.Tensor,
    strides: Sequence[Sequence[int]],
    mirror_axes=None,
    patch_size: Sequence[int] | None = None,
) -> CasePrediction:
    """Pad (to the divisibility, and to ``patch_size`` if given), one forward pass (per flip), crop back."""
    device = next(network.parameters()).device
    minimum = None if patch_size is None else [int(p) for p in patch_size]
    padded, slicer = pad_nd_image(data, minimum, "constant", {"value": 0}, True, list(divisibility(strides)))
    x = padded[None].to(device)
    case = _CaseAccumulator()
    segmentation = case.evidence_with_mirroring(network, x, mirror_axes)
    features, class_logits = case.classify(network, x, segmentation)
    cropped = segmentation[0][(slice(None), *slicer[1:])].cpu()
    return CasePrediction(cropped, class_logits, "whole", case.passes, features)


@torch.inference_mode()
def predict_sliding_window(
    network: MultitaskUNet,
    data: torch.Tensor,
    patch_size: Sequence[int],
    tile_step_size: float = 0.5,
    mirror_axes=None,
) -> CasePrediction:
    device = next(network.parameters()).device
    patch_size = tuple(int(p) for p in patch_size)
    padded, slicer = pad_nd_image(data, patch_size, "constant", {"value": 0}, True, None)
    spatial = padded.shape[1:]
    steps = compute_steps_for_sliding_window(spatial, patch_size, tile_step_size)
    gaussian = compute_gaussian(
        patch_size,
        sigma_scale=1.0 / 8,
        value_scaling_factor=10,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )
    tiles = [tuple(slice(s, s + p) for s, p in zip(start, patch_size)) for start in itertools.product(*steps)]
    weight_sum = torch.zeros(spatial, dtype=torch.float32)
    for tile in tiles:
        weight_sum[tile] += gaussian
    seg_sum = None
    case = _CaseAccumulator()
    for tile in tiles:
        x = padded[(slice(None), *tile)][None].to(device)
        # each voxel's share of this tile: the pooling counts every voxel of the case once
        share = (gaussian / weight_sum[tile])[None, None].to(device)
        seg = case.evidence_with_mirroring(network, x, mirror_axes, share)[0].cpu()
        if seg_sum is None:
            seg_sum = torch.zeros((seg.shape[0], *spatial), dtype=torch.float32)
        seg_sum[(slice(None), *tile)] += seg * gaussian
    stitched = seg_sum / weight_sum
    features, class_logits = case.classify(network, padded[None], stitched[None])
    return CasePrediction(stitched[(slice(None), *slicer[1:])], class_logits, "sliding", case.passes, features)


def whole_volume_shape(
    spatial_shape: Sequence[int], strides: Sequence[Sequence[int]], patch_size: Sequence[int] | None = None
) -> list[int]:
    """The padded shape the whole-volume path feeds the network."""
    minimum = patch_size or [1] * len(spatial_shape)
    return [int(np.ceil(max(s, m) / d) * d) for s, m, d in zip(spatial_shape, minimum, divisibility(strides))]


def choose_path(
    spatial_shape: Sequence[int],
    strides: Sequence[Sequence[int]],
    first_stage_features: int,
    budget_bytes: float,
    patch_size: Sequence[int] | None = None,
) -> str:
    """ "whole" when the padded volume's estimated forward memory fits ``budget_bytes``, else "sliding"."""
    padded = whole_volume_shape(spatial_shape, strides, patch_size)
    return "whole" if estimated_forward_bytes(padded, first_stage_features) <= budget_bytes else "sliding"
