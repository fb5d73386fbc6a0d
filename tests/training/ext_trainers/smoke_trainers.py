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


class nnUNetTrainerMultitaskRevalidate(nnUNetTrainerMultitask):
    """The smoke schedule in a folder of its own, for a copy of the smoke model validated again."""

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


# nnU-Net's default foreground share (its DDP gives rank 0 none with batch 2 on 2 GPUs); early stopping at epoch 2
GLOO = replace(STOP_EARLY, schedule=replace(STOP_EARLY.schedule, oversample_foreground_percent=0.33))


class nnUNetTrainerMultitaskGloo(nnUNetTrainerMultitask):
    """``STOP_EARLY`` under nnU-Net's DDP with gloo on the CPU (tests/training/ddp_gloo.py patches nnU-Net's
    NCCL and CUDA calls; nnU-Net's trainer moves a DDP rank to CUDA, so this one moves it back). Each rank
    writes what it did to ``ddp_rank<R>.json`` in the output folder after the final validation."""

    mtl_config = GLOO
    fail_rank: int | None = None  # this rank raises in its first training step of epoch 1

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cpu")):  # noqa: B008
        super().__init__(plans, configuration, fold, dataset_json, torch.device("cpu"))
        from nnunet_mtl.precision import resolve_precision

        self.device = torch.device("cpu")
        self.grad_scaler = None
        self.precision = resolve_precision(self.mtl_config.schedule.precision, self.device)
        self.record = {"rank": self.local_rank, "validated": [], "combined": [], "foreground_patches": []}

    def rank_validation_keys(self):
        keys = super().rank_validation_keys()
        self.record["validated"].append(list(keys))
        return keys

    def whole_volume_validation(self, *args, **kwargs):
        metrics = super().whole_volume_validation(*args, **kwargs)
        self.record["combined"].append(metrics.combined)
        return metrics

    def run_training(self):
        super().run_training()
        self.record["epochs"] = self.current_epoch

    def train_step(self, batch):
        if self.local_rank == self.fail_rank and self.current_epoch == 1:
            raise RuntimeError(f"injected failure on rank {self.local_rank}")
        target = batch["target"][0] if isinstance(batch["target"], list) else batch["target"]
        self.record["foreground_patches"] += [int(patch.sum() > 0) for patch in target]
        return super().train_step(batch)

    def perform_actual_validation(self, save_probabilities: bool = False):
        super().perform_actual_validation(save_probabilities)
        import json

        weights = self.multitask_network.state_dict()
        self.record.update(
            batch_size=self.batch_size,
            oversample=self.oversample_foreground_percent,
            probabilistic=self.probabilistic_oversampling,
            weights_sum=float(sum(float(v.double().sum()) for v in weights.values())),
            readout=weights["head.readout_weight"].flatten().tolist(),
        )
        with open(os.path.join(self.output_folder, f"ddp_rank{self.local_rank}.json"), "w") as handle:
            json.dump(self.record, handle)


class nnUNetTrainerMultitaskGlooFail(nnUNetTrainerMultitaskGloo):
    fail_rank = 1
