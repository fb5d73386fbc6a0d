from dataclasses import replace

import pytest
import torch

from nnunet_mtl.config import TINY
from nnunet_mtl.training.optimizer import build_optimizer


def test_head_and_shared_network_decay_from_their_own_rates():
    config = replace(TINY, schedule=replace(TINY.schedule, initial_lr=0.05, momentum=0.95, head_initial_lr=0.01))
    head = torch.nn.Linear(4, 3)
    network = torch.nn.ModuleDict({"unet": torch.nn.Conv3d(1, 4, 3), "head": head})
    optimizer, scheduler = build_optimizer(network, head, config, weight_decay=3e-5, num_epochs=40)
    shared, head_group = optimizer.param_groups
    assert {id(p) for p in head_group["params"]} == {id(p) for p in head.parameters()}
    assert len(shared["params"]) == 2  # the conv's weight and bias, not the head's
    assert (shared["momentum"], head_group["momentum"]) == (0.95, config.loss.head_momentum)
    for epoch in (0, 10, 39):
        scheduler.step(epoch)
        factor = (1 - epoch / 40) ** 0.9  # nnU-Net's poly decay
        assert shared["lr"] == pytest.approx(0.05 * factor)
        assert head_group["lr"] == pytest.approx(0.01 * factor)
