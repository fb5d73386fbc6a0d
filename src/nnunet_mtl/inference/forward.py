"""Segmentation logits and subtype logits for one preprocessed case.

Two paths, chosen by an estimate of the forward pass's peak memory against a budget:

* **whole volume** - pad each axis to the network's divisibility (the product of its pooling strides on
  that axis), and at least to the patch size, run ONE forward pass, crop back. The subtype logits are
  the head's output for that pass. Padding a small volume up to the patch makes the pass identical to
  nnU-Net's single tile: the network was trained on patches, and its instance normalisation sees the
  padded zeros.
* **sliding window** - nnU-Net's tiling (tile = patch size, step 0.5 by default) with its Gaussian
  weighting for the segmentation. The subtype logits are averaged over tiles, weighted by how much of
  the structure the head pools over (the lesion by default; the whole pancreas for average pooling)
  each tile predicts::

      class_logits = sum_t w_t * logits_t / sum_t w_t,   w_t = sum_v g(v) * p_t(v) + eps

  where ``g`` is the Gaussian importance map and ``p_t`` that predicted probability in tile ``t``; tiles
  without it barely count, and a volume where it is predicted nowhere falls back to the plain mean.

Mirroring (``mirror_axes``) averages the logits of both outputs over all flips, as nnU-Net does.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

from nnunet_mtl.model.multitask import MultitaskOutput, MultitaskUNet, structure_maps

# Peak memory of a whole-volume forward pass (fp32, no grad) = voxels x first-stage features x BYTES + a
# fixed overhead. Measured by benchmarks/forward_memory.py on PlainConvUNet (tiny and default plans) and
# ResEnc-M: 30.3-32.9 bytes per voxel and feature at 0.8-3.5 M voxels, plus about 50 MiB. The
# constants keep about 10% above the largest measurement.
BYTES_PER_VOXEL_PER_FEATURE = 36
FORWARD_OVERHEAD_BYTES = 96 * 2**20
FOREGROUND_EPS = 1e-3


@dataclass(frozen=True)
class CasePrediction:
    segmentation_logits: torch.Tensor  # (channels, *spatial) float32 on the CPU
    class_logits: torch.Tensor  # (num_subtypes,) float32 on the CPU
    path: str  # "whole" or "sliding"
    num_forward_passes: int


def divisibility(strides: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Per-axis factor that every input size must be a multiple of."""
    return tuple(int(v) for v in np.prod(np.array(strides), axis=0))


def estimated_forward_bytes(spatial_shape: Sequence[int], first_stage_features: int) -> int:
    voxels = int(np.prod(spatial_shape))
    return voxels * first_stage_features * BYTES_PER_VOXEL_PER_FEATURE + FORWARD_OVERHEAD_BYTES


def _mirror_combinations(mirror_axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    axes = [a + 2 for a in (mirror_axes or ())]
    return [()] + [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]


def _forward_with_mirroring(network: MultitaskUNet, x: torch.Tensor, mirror_axes) -> tuple[MultitaskOutput, int]:
    combos = _mirror_combinations(mirror_axes)
    segmentation = class_logits = None
    for axes in combos:
        out = network(torch.flip(x, axes) if axes else x)
        seg = out.segmentation[0] if isinstance(out.segmentation, (list, tuple)) else out.segmentation
        seg = torch.flip(seg, axes) if axes else seg
        segmentation = seg.float() if segmentation is None else segmentation + seg.float()
        class_logits = out.class_logits.float() if class_logits is None else class_logits + out.class_logits.float()
    return MultitaskOutput(segmentation / len(combos), class_logits / len(combos)), len(combos)


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
    out, passes = _forward_with_mirroring(network, padded[None].to(device), mirror_axes)
    segmentation = out.segmentation[0][(slice(None), *slicer[1:])]
    return CasePrediction(segmentation.cpu(), out.class_logits[0].cpu(), "whole", passes)


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
    seg_sum = None
    weight_sum = torch.zeros(spatial, dtype=torch.float32)
    class_sum = None
    class_weight = 0.0
    passes = 0
    for start in itertools.product(*steps):
        tile = tuple(slice(s, s + p) for s, p in zip(start, patch_size))
        out, n = _forward_with_mirroring(network, padded[(slice(None), *tile)][None].to(device), mirror_axes)
        passes += n
        seg = out.segmentation[0].cpu()
        if seg_sum is None:
            seg_sum = torch.zeros((seg.shape[0], *spatial), dtype=torch.float32)
            class_sum = torch.zeros(out.class_logits.shape[1], dtype=torch.float32)
        seg_sum[(slice(None), *tile)] += seg * gaussian
        weight_sum[tile] += gaussian
        maps = structure_maps(seg[None], network.has_regions)[0]
        relevance = maps[0] if network.head.pooling in ("avg", "foreground") else maps[1]
        w = float((relevance * gaussian).sum()) + FOREGROUND_EPS
        class_sum += w * out.class_logits[0].cpu()
        class_weight += w
    segmentation = (seg_sum / weight_sum)[(slice(None), *slicer[1:])]
    return CasePrediction(segmentation, class_sum / class_weight, "sliding", passes)


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


def predict_case(
    network: MultitaskUNet,
    data: torch.Tensor,
    patch_size: Sequence[int],
    strides: Sequence[Sequence[int]],
    first_stage_features: int,
    memory_budget_bytes: float,
    tile_step_size: float = 0.5,
    mirror_axes=None,
) -> CasePrediction:
    """Whole-volume forward when its estimated peak memory fits the budget, else sliding window."""
    if choose_path(data.shape[1:], strides, first_stage_features, memory_budget_bytes, patch_size) == "whole":
        return predict_whole_volume(network, data, strides, mirror_axes, patch_size)
    return predict_sliding_window(network, data, patch_size, tile_step_size, mirror_axes)
