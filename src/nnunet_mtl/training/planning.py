"""nnU-Net planning and preprocessing for a prepared dataset.

``default`` and ``resenc-m`` use nnU-Net's own planners (``nnUNetPlans``, ``nnUNetResEncUNetMPlans``); ``tiny``
uses nnU-Net's planner under a CPU budget (training/cpu_plan.py), a real plans file ``nnUNetMTLTinyPlans.json``
with data of its own, so ``nnUNetv2_train DATASET 3d_fullres 0 -tr nnUNetTrainerMultitaskTiny -p
nnUNetMTLTinyPlans`` works too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunet_mtl.config import PRESETS
from nnunet_mtl.data.prepare import SPLITS_FILE, SUBTYPES_FILE, sync_preprocessed_split
from nnunet_mtl.errors import InputError
from nnunet_mtl.io import check_writable_dir, write_text_atomic
from nnunet_mtl.paths import CONFIGURATION, dataset_name_for, ensure_nnunet_env
from nnunet_mtl.training.cpu_plan import describe, made_with, plan_for_cpu
from nnunet_mtl.training.distributed import check_world_size
from nnunet_mtl.training.subtypes import SubtypeMap, UnknownCaseError

DEFAULT_NUM_FOLDS = 5  # nnU-Net's own split where a dataset has no splits_final.json


def check_training_inputs(dataset_id: int, fold: int, num_gpus: int = 1, num_processes: int = 1) -> None:
    """Refuse, before anything is planned or trained, what would fail later or train on the wrong split
    (nnU-Net trains an unknown fold on a random 80:20 split)."""
    for option, value in (("--num-gpus", num_gpus), ("--num-processes", num_processes)):
        if value < 1:
            raise InputError(None, f"{option} must be at least 1, got {value}")
    name = dataset_name_for(dataset_id)
    folders = ensure_nnunet_env(announce=False)
    splits = [root / name / SPLITS_FILE for root in (folders.raw, folders.preprocessed)]
    splits = [path for path in splits if path.is_file()]
    if splits:
        num_folds = len(_read_splits(splits[0]))
        if not 0 <= fold < num_folds:
            raise InputError(
                splits[0],
                f"has no fold {fold} (folds 0..{num_folds - 1}; fold 0 is the original train/validation split)",
            )
    elif not 0 <= fold < DEFAULT_NUM_FOLDS:
        raise InputError(None, f"--fold {fold}: nnU-Net's default split has folds 0..{DEFAULT_NUM_FOLDS - 1}")
    for root in (folders.preprocessed, folders.results):
        check_writable_dir(root)


def check_planned_run(name: str, plans_identifier: str, fold: int, num_gpus: int) -> None:
    """Before nnU-Net starts its processes: the GPUs fit the plan's batch, and every case of the fold's
    training and validation splits has a subtype (the trainer checks again, on every rank)."""
    from nnunetv2.paths import nnUNet_preprocessed

    folder = Path(nnUNet_preprocessed.get()) / name
    plans = load_json(folder / f"{plans_identifier}.json")
    check_world_size(plans["configurations"][CONFIGURATION]["batch_size"], num_gpus)
    splits_file = folder / SPLITS_FILE
    if splits_file.is_file():
        split = _read_splits(splits_file)[fold]
        subtypes = SubtypeMap.load(folder)
        try:
            for part in ("train", "val"):
                subtypes.require(split[part], f"fold {fold}'s {'validation' if part == 'val' else 'training'} split")
        except UnknownCaseError as err:
            raise InputError(splits_file, str(err)) from None


def _read_splits(path: Path) -> list:
    try:
        splits = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(path, "not valid JSON") from None
    if not isinstance(splits, list) or not splits:
        raise InputError(path, "expected a list of folds ({'train': [...], 'val': [...]})")
    return splits


def _preprocessed_complete(folder: Path, plans: dict, num_training: int) -> bool:
    data = folder / plans["configurations"][CONFIGURATION]["data_identifier"]
    return data.is_dir() and len(list(data.glob("*.pkl"))) == num_training


def ensure_planned(dataset_id: int, preset: str, num_processes: int = 2, log=print) -> tuple[str, str]:
    """Plan and preprocess what ``preset`` needs, where missing. Returns (dataset name, plans identifier)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw

    name = dataset_name_for(dataset_id)
    raw = Path(nnUNet_raw.get()) / name
    folder = Path(nnUNet_preprocessed.get()) / name
    chosen = PRESETS[preset]
    plans_identifier = chosen.plans_identifier
    plans_file = folder / f"{plans_identifier}.json"
    if not (folder / "dataset_fingerprint.json").is_file():
        log(f"nnU-Net: extracting the dataset fingerprint of {name}")
        extract_fingerprints([dataset_id], num_processes=num_processes, check_dataset_integrity=True)
    if chosen.planner == "cpu":
        if not plans_file.is_file() or not made_with(load_json(plans_file), chosen.config.cpu_plan):
            log(f"nnU-Net: planning {plans_identifier} with nnU-Net's planner under the CPU budget")
            plans_file.unlink(missing_ok=True)  # nnU-Net's save_plans keeps configurations of an older file
            plan_for_cpu(dataset_id, chosen.config, plans_identifier)
            shutil.rmtree(folder / load_json(plans_file)["configurations"][CONFIGURATION]["data_identifier"], True)
        log(describe(load_json(plans_file)))
    elif not plans_file.is_file():
        log(f"nnU-Net: planning {plans_identifier} with {chosen.planner}")
        plan_experiments([dataset_id], chosen.planner)
    plans = load_json(plans_file)
    num_training = load_json(folder / "dataset.json")["numTraining"]
    if not _preprocessed_complete(folder, plans, num_training):
        log(f"nnU-Net: preprocessing {plans_identifier} {CONFIGURATION}")
        preprocess([dataset_id], plans_identifier, [CONFIGURATION], [num_processes])
    if raw.is_dir():
        _sync_multitask_files(raw, folder)
    elif not (folder / SUBTYPES_FILE).is_file():
        raise InputError(folder / SUBTYPES_FILE, "missing, and no raw dataset to take it from")
    return name, plans_identifier


def _sync_multitask_files(raw: Path, preprocessed: Path) -> None:
    """Keep the subtype map next to the preprocessed data and fold 0 equal to the original split."""
    if not (raw / SUBTYPES_FILE).is_file():
        raise InputError(raw / SUBTYPES_FILE, "missing: this dataset was not written by `nnunet-mtl prepare`")
    write_text_atomic(preprocessed / SUBTYPES_FILE, (raw / SUBTYPES_FILE).read_text())
    sync_preprocessed_split(preprocessed, raw / SPLITS_FILE)
