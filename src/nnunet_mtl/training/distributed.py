"""DDP-aware pieces of the multitask loss and validation (single-process when DDP is not initialised)."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from nnunet_mtl.errors import InputError

# after an error on one rank, how long its interpreter may take to shut down before it is ended hard
RANK_EXIT_GRACE_SECONDS = 20.0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def gather_objects(local: list[Any]) -> list[Any]:
    """Concatenate every rank's list, in rank order, on every rank."""
    if not is_distributed():
        return list(local)
    gathered: list[list[Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return [item for part in gathered for item in part]


def broadcast_from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (for decisions that must agree, e.g. the schedule's length)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@dataclass(frozen=True)
class RankSampling:
    """One rank's share of the plan's batch and how it draws foreground-centred patches."""

    batch_size: int
    oversample_foreground_percent: float
    probabilistic: bool  # nnU-Net's probabilistic_oversampling: each patch is foreground with that probability


def check_world_size(global_batch: int, world_size: int) -> None:
    if global_batch < world_size:
        raise InputError(
            None,
            f"--num-gpus {world_size} is larger than the plan's batch size {global_batch}: nnU-Net's DDP splits the "
            f"plan's batch over the GPUs, so use at most {global_batch} GPUs (or a plan with a batch of at least "
            f"{world_size})",
        )


def rank_sampling(global_batch: int, world_size: int, rank: int, oversample_percent: float) -> RankSampling:
    """nnU-Net's split of the plan's batch over ranks, with the global batch's foreground share on every rank.

    nnU-Net (``_set_batch_size_and_oversample``) hands the batch's foreground patches to the last ranks: with
    batch 2 on 2 GPUs and 0.33, rank 0 never draws a foreground patch and rank 1 always does, so one rank's
    subtype head sees lesions only by chance. Here every rank draws foreground with the share nnU-Net means for
    the global batch (its rounding: 1 of 2 for 0.33): deterministically where the rank's batch holds it exactly,
    else per patch with that probability.
    """
    check_world_size(global_batch, world_size)
    sizes = [global_batch // world_size + (1 if r < global_batch % world_size else 0) for r in range(world_size)]
    foreground = global_batch - round(global_batch * (1 - oversample_percent))  # nnU-Net's DataLoader rounding
    share = foreground / global_batch
    per_rank = sizes[rank] * share
    return RankSampling(sizes[rank], share, not math.isclose(per_rank, round(per_rank)))


@contextlib.contextmanager
def end_rank_on_error(grace_seconds: float = RANK_EXIT_GRACE_SECONDS) -> Iterator[None]:
    """Under DDP, an error on this rank ends this process promptly, so that the launcher (nnU-Net's
    ``mp.spawn``) ends the other ranks instead of leaving them in a collective until its timeout: the error is
    printed with the rank and re-raised, and should the interpreter's shutdown hang (a process group or data
    loader thread that never returns), the process is ended hard after ``grace_seconds``."""
    try:
        yield
    except Exception as err:
        if is_distributed():
            rank = dist.get_rank()
            print(f"rank {rank}: {type(err).__name__}: {err} (ending this rank)", file=sys.stderr, flush=True)
            timer = threading.Timer(grace_seconds, os._exit, args=(1,))
            timer.daemon = True
            timer.start()
        raise


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
