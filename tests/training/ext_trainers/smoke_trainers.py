"""Very short schedules of the multitask trainer, found by nnU-Net through ``nnUNet_extTrainer`` in tests."""

from dataclasses import replace

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


class nnUNetTrainerMultitaskStopEarly(nnUNetTrainerMultitask):
    mtl_config = STOP_EARLY
