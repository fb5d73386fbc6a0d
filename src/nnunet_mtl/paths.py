"""Where nnU-Net's three folders live.

nnU-Net reads ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` from the environment.
Where a variable is unset, :func:`ensure_nnunet_env` puts its folder under one default home
(``$NNUNET_MTL_HOME`` if set, else ``~/.nnunet_mtl``) and sets the variable, so that nnU-Net's own worker
processes see the same folders.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

NNUNET_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
HOME_VARIABLE = "NNUNET_MTL_HOME"


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


def find_dataset_folders(root: Path, dataset_id: int) -> list[Path]:
    """Folders in ``root`` that belong to ``dataset_id`` under any name."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir())
