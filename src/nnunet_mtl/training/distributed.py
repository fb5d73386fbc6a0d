"""DDP-aware pieces of the multitask loss and validation (single-process when DDP is not initialised)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def gather_objects(local: list[Any]) -> list[Any]:
    """Concatenate every rank's list, in rank order, on every rank."""
    if not is_distributed():
        return list(local)
    gathered: list[list[Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return [item for part in gathered for item in part]


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """Class-weighted cross-entropy normalised over the GLOBAL batch.

    PyTorch's weighted mean divides by the sum of the weights of the local batch. Under DDP, whose
    gradient is the mean over ranks, that gives the wrong global weighting when ranks see different class
    mixes. Here each rank divides its weighted sum by the global weight sum (all-reduced, no gradient)
    and multiplies by the world size, so DDP's averaging yields exactly the single-process weighted
    mean over all ranks' samples.
    """
    per_sample = F.cross_entropy(logits.float(), targets, reduction="none")
    weights = class_weights.to(per_sample.device)[targets]
    weight_sum = weights.sum().detach()
    world = 1
    if is_distributed():
        dist.all_reduce(weight_sum)
        world = dist.get_world_size()
    return (per_sample * weights).sum() * world / weight_sum.clamp_min(1e-12)


def inverse_frequency_weights(counts: list[int], smoothing: float) -> torch.Tensor:
    """Class weights ~ 1 / (count + smoothing), scaled so the count-weighted mean weight is 1."""
    counts_t = torch.tensor(counts, dtype=torch.float32)
    weights = 1.0 / (counts_t + smoothing)
    return weights * counts_t.sum() / (weights * counts_t).sum().clamp_min(1e-12)
