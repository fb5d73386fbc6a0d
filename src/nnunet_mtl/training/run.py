"""``nnunet-mtl train``: plan and preprocess where missing, then train through nnU-Net's own runner."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from nnunet_mtl.config import PRESETS
from nnunet_mtl.errors import InputError, require_device
from nnunet_mtl.paths import CONFIGURATION, model_folder, preset_model_folder
from nnunet_mtl.training.planning import check_planned_run, check_training_inputs, ensure_planned
from nnunet_mtl.training.tracking import enable_wandb

EXT_TRAINER_VARIABLE = "nnUNet_extTrainer"


def trainer_folder() -> Path:
    """The folder to put in ``nnUNet_extTrainer`` so that nnU-Net finds nnunet-mtl's trainers."""
    return Path(__file__).resolve().parent.parent / "nnunet_ext"


def register_trainers() -> None:
    folder = str(trainer_folder())
    existing = [p for p in os.environ.get(EXT_TRAINER_VARIABLE, "").split(os.pathsep) if p]
    if folder not in existing:
        os.environ[EXT_TRAINER_VARIABLE] = os.pathsep.join([folder, *existing])


def train(
    dataset_id: int,
    fold: int = 0,
    preset: str = "tiny",
    device: str = "cpu",
    continue_training: bool = False,
    num_gpus: int = 1,
    num_processes: int = 2,
    wandb: bool = False,
    validation_only: bool = False,
) -> Path:
    """Train one fold; the final validation runs on ``checkpoint_best`` (selected on the combined metric).
    ``validation_only``: only that final validation, of a model trained earlier."""
    if preset not in PRESETS:
        raise InputError(None, f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    require_device(device)
    if num_gpus > 1 and device != "cuda":
        raise InputError(None, "--num-gpus > 1 needs --device cuda (nnU-Net's DDP uses NCCL)")
    check_training_inputs(dataset_id, fold, num_gpus, num_processes)
    if validation_only:
        if continue_training:
            raise InputError(None, "--validation-only trains nothing: leave out --continue")
        fold_dir = preset_model_folder(dataset_id, preset) / f"fold_{fold}"
        if not (fold_dir / "checkpoint_best.pth").is_file():
            raise InputError(
                fold_dir / "checkpoint_best.pth", "not found: --validation-only validates a model trained earlier"
            )
        if not (fold_dir / "checkpoint_final.pth").is_file():  # nnU-Net validates only a finished training
            raise InputError(fold_dir / "checkpoint_final.pth", "not found: this fold's training has not finished")
    if wandb:
        enable_wandb()
    name, plans_identifier = ensure_planned(dataset_id, preset, num_processes)
    check_planned_run(name, plans_identifier, fold, num_gpus)
    trainer = PRESETS[preset].trainer
    register_trainers()
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    else:
        torch.set_num_threads(1)
    from nnunetv2.run.run_training import run_training

    run_training(
        name,
        CONFIGURATION,
        fold,
        trainer,
        plans_identifier,
        num_gpus=num_gpus,
        continue_training=continue_training,
        only_run_validation=validation_only,
        val_with_best=True,
        device=torch.device(device),
    )
    return model_folder(name, trainer, plans_identifier)
