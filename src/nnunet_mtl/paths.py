"""Where nnU-Net's three folders live, and the dataset and model folders in them.

nnU-Net reads ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` from the environment.
Where a variable is unset, :func:`ensure_nnunet_env` puts its folder under one default home
(``$NNUNET_MTL_HOME`` if set, else ``~/.nnunet_mtl``) and sets the variable, so that nnU-Net's own worker
processes see the same folders. Dataset names and model folders come from nnU-Net's own helpers, with
one-line errors around them.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from nnunet_mtl.config import PRESETS
from nnunet_mtl.errors import InputError

NNUNET_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
HOME_VARIABLE = "NNUNET_MTL_HOME"
CONFIGURATION = "3d_fullres"  # the nnU-Net configuration that nnunet-mtl trains and predicts


@dataclass(frozen=True)
class NnunetFolders:
    raw: Path
    preprocessed: Path
    results: Path


def default_home() -> Path:
    return Path(os.environ.get(HOME_VARIABLE) or Path.home() / ".nnunet_mtl").expanduser()


def ensure_nnunet_env(announce: bool = True) -> NnunetFolders:
    """Fill in unset nnU-Net variables with folders under the default home (saying so once)."""
    missing = [name for name in NNUNET_VARIABLES if not os.environ.get(name)]
    if missing:
        home = default_home()
        for name in missing:
            os.environ[name] = str(home / name)
        if announce:
            print(
                f"nnunet-mtl: {', '.join(missing)} not set; using {home}/<name> "
                f"(set the nnUNet_* variables or {HOME_VARIABLE} to choose)",
                file=sys.stderr,
            )
    return NnunetFolders(*(Path(os.environ[name]) for name in NNUNET_VARIABLES))


def dataset_folder_name(dataset_id: int, name: str) -> str:
    return f"Dataset{dataset_id:03d}_{name}"


def datasets_with_id(dataset_id: int) -> list[str]:
    """Names of the ``DatasetNNN_*`` folders of ``dataset_id`` in nnU-Net's three folders."""
    from nnunetv2.utilities.dataset_name_id_conversion import find_candidate_datasets

    ensure_nnunet_env(announce=False)
    return [str(name) for name in find_candidate_datasets(dataset_id)]


def dataset_name_for(dataset_id: int) -> str:
    """The ``DatasetNNN_NAME`` of ``dataset_id`` (nnU-Net's ``maybe_convert_to_dataset_name``, with
    one-line errors for no dataset and for several names)."""
    raw = ensure_nnunet_env(announce=False).raw
    names = datasets_with_id(dataset_id)
    if not names:
        raise InputError(raw, f"no dataset {dataset_id} (Dataset{dataset_id:03d}_*): run `nnunet-mtl prepare` first")
    if len(names) > 1:
        raise InputError(raw, f"dataset id {dataset_id} has several names: {', '.join(names)}")
    return names[0]


def model_folder(dataset: int | str, trainer: str, plans_identifier: str) -> Path:
    """nnU-Net's model folder ``$nnUNet_results/DatasetNNN_NAME/<trainer>__<plans>__3d_fullres``."""
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    name = dataset_name_for(dataset) if isinstance(dataset, int) else dataset
    return Path(get_output_folder(name, trainer, plans_identifier, CONFIGURATION))


def preset_model_folder(dataset_id: int, preset: str) -> Path:
    """The model folder that ``nnunet-mtl train --dataset-id N --preset P`` writes."""
    chosen = PRESETS[preset]
    return model_folder(dataset_id, chosen.trainer, chosen.plans_identifier)
