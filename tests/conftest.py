"""Shared fixtures. nnU-Net reads its folder variables at import, so they are set here, before any test."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_NNUNET_ROOT = Path(tempfile.mkdtemp(prefix="nnunet-mtl-tests-"))
for _name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
    os.environ[_name] = str(_NNUNET_ROOT / _name)

SMALL_SHAPE = (24, 32, 32)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_NNUNET_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def nnunet_root() -> Path:
    return _NNUNET_ROOT


@pytest.fixture(scope="session")
def small_phantom(tmp_path_factory) -> Path:
    """A small phantom (2,2,2 train / 1,1,1 validation / 3 test) shared read-only by tests."""
    from nnunet_mtl.data.phantom import PhantomSpec, generate_phantom

    out = tmp_path_factory.mktemp("phantom") / "data"
    return generate_phantom(out, PhantomSpec(seed=7, train=(2, 2, 2), validation=(1, 1, 1), test=3, shape=SMALL_SHAPE))


@pytest.fixture
def phantom_copy(small_phantom, tmp_path) -> Path:
    """A private copy of the small phantom that a test may damage."""
    return Path(shutil.copytree(small_phantom, tmp_path / "data"))


def renamed_images(phantom: Path, folder: Path, count: int, first_id: int) -> Path:
    """``count`` cases for a prediction folder: the phantom's test images, repeated, as quiz_<id>_0000.nii.gz."""
    sources = sorted((phantom / "test").glob("*_0000.nii.gz"))
    for i in range(count):
        shutil.copyfile(sources[i % len(sources)], folder / f"quiz_{first_id + i}_0000.nii.gz")
    return folder


def tree_snapshot(root: Path) -> set[str]:
    """All paths under ``root`` (hidden ones included), relative to it."""
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ------------------------------------------------------------------ a prepared, planned dataset and a model

EXT_TRAINERS = Path(__file__).parent / "training" / "ext_trainers"
DATASET_ID = 60


FINGERPRINT_SAMPLES = 10**6


@contextlib.contextmanager
def quick_fingerprint():
    """nnU-Net's fingerprint draws 10^8 foreground voxels (with replacement) for its intensity statistics
    whatever the dataset's size: 55 s on 2 cores. The test phantoms have about 2 * 10^4 foreground voxels in
    all, so in-process planning in the tests draws 10^6 (under 1 s); planning through nnU-Net's CLI
    (tests/data/test_prepare.py, the `train` subprocesses) keeps nnU-Net's number."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor

    extractor_init = DatasetFingerprintExtractor.__init__

    def fewer_samples(self, *args, **kwargs):
        extractor_init(self, *args, **kwargs)
        self.num_foreground_voxels_for_intensitystats = FINGERPRINT_SAMPLES

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatasetFingerprintExtractor, "__init__", fewer_samples)
        yield


@pytest.fixture(scope="session")
def planned_dataset(small_phantom):
    """The small phantom, prepared and planned with the tiny plan (nnU-Net preprocessing included)."""
    from nnunet_mtl.cli import main
    from nnunet_mtl.training.planning import ensure_planned

    assert main(["prepare", str(small_phantom), "--dataset-id", str(DATASET_ID)]) == 0
    with quick_fingerprint():
        name, plans = ensure_planned(DATASET_ID, "tiny", num_processes=1, log=lambda *_: None)
    return name, plans


def nnunet_env() -> dict:
    from nnunet_mtl.training.run import trainer_folder

    env = os.environ.copy()
    env["nnUNet_extTrainer"] = os.pathsep.join([str(trainer_folder()), str(EXT_TRAINERS)])
    env["nnUNet_n_proc_DA"] = "1"
    return env


def run_nnunet(*args: str) -> subprocess.CompletedProcess:
    binary = Path(sys.executable).with_name(args[0])
    result = subprocess.run([str(binary), *args[1:]], capture_output=True, text=True, env=nnunet_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def train_with_nnunet(name: str, plans: str, trainer: str) -> tuple[Path, subprocess.CompletedProcess]:
    command = ["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", trainer, "-p", plans]
    result = run_nnunet(*command, "-device", "cpu", "--val_best")
    return _NNUNET_ROOT / "nnUNet_results" / name / f"{trainer}__{plans}__3d_fullres", result


@pytest.fixture(scope="session")
def smoke_model(planned_dataset):
    """A 3-epoch model trained through stock ``nnUNetv2_train`` with our trainer found via nnUNet_extTrainer."""
    return train_with_nnunet(*planned_dataset, "nnUNetTrainerMultitaskSmoke")
