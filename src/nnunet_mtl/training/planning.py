"""nnU-Net planning and preprocessing for a prepared dataset, and the reduced ``tiny`` plan for CPUs.

The tiny plan is a real nnU-Net plans file (``nnUNetMTLTinyPlans.json`` next to ``nnUNetPlans.json``):
nnU-Net's own 3d_fullres configuration with a smaller patch, 4 stages of 16-128 features and batch size
2. It reuses the default plan's preprocessed data (same spacing and normalisation), so
``nnUNetv2_train DATASET 3d_fullres 0 -tr nnUNetTrainerMultitaskTiny -p nnUNetMTLTinyPlans`` works too.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunet_mtl.config import PRESETS
from nnunet_mtl.data.prepare import SPLITS_FILE, SUBTYPES_FILE, sync_preprocessed_split
from nnunet_mtl.errors import InputError
from nnunet_mtl.io import check_writable_dir, write_text_atomic
from nnunet_mtl.paths import CONFIGURATION, dataset_name_for, ensure_nnunet_env

TINY_PLANS = "nnUNetMTLTinyPlans"
TINY_PATCH = (32, 48, 48)
TINY_FEATURES = (16, 32, 64, 128)
TINY_BATCH_SIZE = 2
DEFAULT_NUM_FOLDS = 5  # nnU-Net's own split where a dataset has no splits_final.json
PLANNERS = {"nnUNetPlans": "ExperimentPlanner", "nnUNetResEncUNetMPlans": "nnUNetPlannerResEncM"}


def tiny_plans(default_plans: dict) -> dict:
    """The reduced CPU plan derived from nnU-Net's default 3d_fullres plan."""
    plans = copy.deepcopy(default_plans)
    plans["plans_name"] = TINY_PLANS
    config = plans["configurations"][CONFIGURATION]
    arch = config["architecture"]["arch_kwargs"]
    stages = len(TINY_FEATURES)
    arch["n_stages"] = stages
    arch["features_per_stage"] = list(TINY_FEATURES)
    arch["kernel_sizes"] = arch["kernel_sizes"][:stages]
    arch["strides"] = arch["strides"][:stages]
    arch["n_conv_per_stage"] = arch["n_conv_per_stage"][:stages]
    arch["n_conv_per_stage_decoder"] = arch["n_conv_per_stage_decoder"][: stages - 1]
    divisor = np.prod(np.array(arch["strides"]), axis=0)
    patch = [int(max(d, min(p, t) // d * d)) for p, t, d in zip(config["patch_size"], TINY_PATCH, divisor)]
    config["patch_size"] = patch
    config["batch_size"] = TINY_BATCH_SIZE
    # keep the default plan's preprocessed data: same spacing, normalisation and resampling
    config["data_identifier"] = default_plans["configurations"][CONFIGURATION]["data_identifier"]
    plans["configurations"] = {CONFIGURATION: config}
    return plans


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
    plans_identifier = PRESETS[preset].plans_identifier
    base_identifier = "nnUNetPlans" if plans_identifier == TINY_PLANS else plans_identifier
    if not (folder / "dataset_fingerprint.json").is_file():
        log(f"nnU-Net: extracting the dataset fingerprint of {name}")
        extract_fingerprints([dataset_id], num_processes=num_processes, check_dataset_integrity=True)
    if not (folder / f"{base_identifier}.json").is_file():
        log(f"nnU-Net: planning {base_identifier} with {PLANNERS[base_identifier]}")
        plan_experiments([dataset_id], PLANNERS[base_identifier])
    base_plans = load_json(folder / f"{base_identifier}.json")
    num_training = load_json(folder / "dataset.json")["numTraining"]
    if not _preprocessed_complete(folder, base_plans, num_training):
        log(f"nnU-Net: preprocessing {base_identifier} {CONFIGURATION}")
        preprocess([dataset_id], base_identifier, [CONFIGURATION], [num_processes])
    if plans_identifier == TINY_PLANS:
        write_text_atomic(folder / f"{TINY_PLANS}.json", json.dumps(tiny_plans(base_plans), indent=4) + "\n")
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
