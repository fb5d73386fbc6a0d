"""Very short schedules of the multitask trainer, found by nnU-Net through ``nnUNet_extTrainer`` in tests."""

import os
import signal
from dataclasses import replace

import torch

from nnunet_mtl.config import TINY
from nnunet_mtl.training.trainer import nnUNetTrainerMultitask

SMOKE = replace(
    TINY,
    schedule=replace(TINY.schedule, num_epochs=3, iterations_per_epoch=2, val_iterations_per_epoch=1),
    loss=replace(TINY.loss, phase1_epochs=1),
    selection=replace(TINY.selection, validate_every=1, patience=100),
)
STOP_EARLY = replace(
    SMOKE,
    schedule=replace(SMOKE.schedule, num_epochs=10),
    selection=replace(SMOKE.selection, patience=2, min_delta=10.0),  # nothing can beat the first validation
)


class nnUNetTrainerMultitaskSmoke(nnUNetTrainerMultitask):
    mtl_config = SMOKE


class nnUNetTrainerMultitaskScratch(nnUNetTrainerMultitask):
    """The smoke schedule in an output folder of its own: for tests that build a trainer by hand and would
    otherwise write logs, events and checkpoints into the smoke model's folder."""

    mtl_config = SMOKE


class nnUNetTrainerMultitaskStopEarly(nnUNetTrainerMultitask):
    mtl_config = STOP_EARLY


ONE_EPOCH = replace(SMOKE, schedule=replace(SMOKE.schedule, num_epochs=1))
# at most 60 epochs, but a 12-second budget: the schedule is sized to the epochs that fit
BUDGET = replace(
    SMOKE,
    schedule=replace(SMOKE.schedule, num_epochs=60, time_budget_minutes=0.2),
    selection=replace(SMOKE.selection, validate_every=3),
)


class nnUNetTrainerMultitaskBudget(nnUNetTrainerMultitask):
    mtl_config = BUDGET


class nnUNetTrainerMultitaskOneEpoch(nnUNetTrainerMultitask):
    mtl_config = ONE_EPOCH


# 8 epochs at most; nothing beats the first validation (epoch 1), so training stops before epoch 5
FAULTS = replace(
    SMOKE,
    schedule=replace(SMOKE.schedule, num_epochs=8),
    loss=replace(SMOKE.loss, phase1_epochs=2),
    selection=replace(SMOKE.selection, validate_every=2, patience=4, min_delta=10.0),
)
KILL_IN_SAVE = "NNUNET_MTL_TEST_KILL_IN_SAVE"  # the epoch whose checkpoint_latest write is killed half-way
_torch_save = torch.save


def _save_half_then_die(obj, handle) -> None:
    _torch_save(obj, handle)
    handle.flush()
    handle.truncate(handle.tell() // 2)
    handle.flush()
    group = os.getpgid(0)
    if group == os.getpid():  # a session of its own (the test's subprocess): take the workers along
        os.killpg(group, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


class nnUNetTrainerMultitaskFaults(nnUNetTrainerMultitask):
    """``FAULTS``; with ``KILL_IN_SAVE=E`` in the environment, SIGKILLed in the middle of writing
    checkpoint_latest at the end of epoch E."""

    mtl_config = FAULTS

    def save_checkpoint(self, filename: str) -> None:
        if os.path.basename(filename) == "checkpoint_latest.pth" and os.environ.get(KILL_IN_SAVE) == str(
            self.current_epoch
        ):
            torch.save = _save_half_then_die
        super().save_checkpoint(filename)
