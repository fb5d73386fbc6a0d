"""nnU-Net's SGD and poly schedule, with the classification head as its own parameter group."""

from __future__ import annotations

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from nnunet_mtl.config import MultitaskConfig


class GroupPolyLRScheduler(PolyLRScheduler):
    """nnU-Net's poly decay applied to each parameter group's own initial rate (nnU-Net's scheduler
    gives every group the same rate)."""

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        factor = (1 - current_step / self.max_steps) ** self.exponent
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def build_optimizer(
    network: torch.nn.Module, head: torch.nn.Module, config: MultitaskConfig, weight_decay: float, num_epochs: int
) -> tuple[torch.optim.SGD, GroupPolyLRScheduler]:
    head_parameters = list(head.parameters())
    head_ids = {id(p) for p in head_parameters}
    shared = [p for p in network.parameters() if id(p) not in head_ids]
    schedule = config.schedule
    optimizer = torch.optim.SGD(
        [
            {"params": shared},
            {"params": head_parameters, "lr": schedule.head_initial_lr, "momentum": config.loss.head_momentum},
        ],
        schedule.initial_lr,
        weight_decay=weight_decay,
        momentum=schedule.momentum,
        nesterov=True,
    )
    return optimizer, GroupPolyLRScheduler(optimizer, schedule.initial_lr, num_epochs)
