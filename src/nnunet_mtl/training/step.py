"""One multitask training step: the losses of one batch, then the optimiser step.

The trainer's ``train_step`` and ``validation_step`` are these functions on its own objects;
``benchmarks/gpu_check.py`` times the same functions on a GPU that has no nnU-Net trainer stack.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from nnunet_mtl.precision import autocast
from nnunet_mtl.training.distributed import weighted_cross_entropy


class StepLosses(NamedTuple):
    output: object  # the network's MultitaskOutput
    seg_loss: torch.Tensor
    cls_loss: torch.Tensor
    total: torch.Tensor


def multitask_losses(
    network: torch.nn.Module,
    segmentation_loss,
    data: torch.Tensor,
    target,
    subtype: torch.Tensor,
    class_weights: torch.Tensor,
    cls_weight: float,
    precision: str,
    detach_head_input: bool,
    reference_maps: torch.Tensor | None,
) -> StepLosses:
    """nnU-Net's segmentation loss plus ``cls_weight`` x the class-weighted cross-entropy, under autocast."""
    with autocast(precision, data.device):
        output = network(data, detach_head_input=detach_head_input, reference_maps=reference_maps)
        seg_loss = segmentation_loss(output.segmentation, target)
        cls_loss = weighted_cross_entropy(output.class_logits, subtype, class_weights)
        total = seg_loss + cls_weight * cls_loss
    return StepLosses(output, seg_loss, cls_loss, total)


def optimise(
    total: torch.Tensor,
    network: torch.nn.Module,
    head: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    grad_scaler: torch.amp.GradScaler | None,
    clip_norm: float,
    head_gradient_divisor: float | None,
) -> None:
    """Backward (scaled where a gradient scaler is given, as nnU-Net's fp16 training), the head's gradient
    divided by ``head_gradient_divisor`` (the classification weight: the head learns at full rate), nnU-Net's
    gradient clipping, the optimiser step."""
    if grad_scaler is not None:
        grad_scaler.scale(total).backward()
        grad_scaler.unscale_(optimizer)
    else:
        total.backward()
    if head_gradient_divisor:
        for parameter in head.parameters():
            if parameter.grad is not None:
                parameter.grad.div_(head_gradient_divisor)
    torch.nn.utils.clip_grad_norm_(network.parameters(), clip_norm)
    if grad_scaler is not None:
        grad_scaler.step(optimizer)
        grad_scaler.update()
    else:
        optimizer.step()
