import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_mtl.cli import main
from nnunet_mtl.training.run import trainer_folder

EXT_TRAINERS = Path(__file__).parent / "ext_trainers"
DATASET_ID = 60


@pytest.fixture(scope="session")
def planned_dataset(small_phantom):
    """The small phantom, prepared and planned with the tiny plan (nnU-Net preprocessing included)."""
    from nnunet_mtl.training.planning import ensure_planned

    assert main(["prepare", str(small_phantom), "--dataset-id", str(DATASET_ID)]) == 0
    name, plans = ensure_planned(DATASET_ID, "tiny", num_processes=1, log=lambda *_: None)
    return name, plans


def nnunet_env() -> dict:
    env = os.environ.copy()
    env["nnUNet_extTrainer"] = os.pathsep.join([str(trainer_folder()), str(EXT_TRAINERS)])
    env["nnUNet_n_proc_DA"] = "1"
    return env


def run_nnunet(*args: str) -> subprocess.CompletedProcess:
    binary = Path(sys.executable).with_name(args[0])
    result = subprocess.run([str(binary), *args[1:]], capture_output=True, text=True, env=nnunet_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="session")
def smoke_model(planned_dataset, nnunet_root):
    """A 3-epoch model trained through stock ``nnUNetv2_train`` with our trainer found via nnUNet_extTrainer."""
    name, plans = planned_dataset
    result = run_nnunet(
        "nnUNetv2_train",
        str(DATASET_ID),
        "3d_fullres",
        "0",
        "-tr",
        "nnUNetTrainerMultitaskSmoke",
        "-p",
        plans,
        "-device",
        "cpu",
        "--val_best",
    )
    folder = nnunet_root / "nnUNet_results" / name / f"nnUNetTrainerMultitaskSmoke__{plans}__3d_fullres"
    return folder, result
