"""``nnunet-mtl predict`` killed with SIGKILL mid-way leaves only complete masks; a rerun does the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mtl.data.subtype_csv import RESULTS_CSV
from nnunet_mtl.inference.predictor import RECORDS_FOLDER
from nnunet_mtl.io import Geometry
from tests.conftest import renamed_images

NUM_CASES = 8
TIMEOUT_S = 180


@pytest.fixture(scope="module")
def images(small_phantom, tmp_path_factory) -> Path:
    """Eight cases: the phantom's test images under new names."""
    return renamed_images(small_phantom, tmp_path_factory.mktemp("kill_inputs"), NUM_CASES, 500)


def predict(model_dir: Path, images: Path, out: Path, console: Path, *extra: str) -> subprocess.Popen:
    command = [str(Path(sys.executable).with_name("nnunet-mtl")), "predict", "--model-dir", str(model_dir)]
    with console.open("w") as handle:
        return subprocess.Popen(
            [*command, "-i", str(images), "-o", str(out), *extra],
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one killpg ends the process and anything it started
        )


def finished(out: Path) -> list[str]:
    """Cases whose record (written after the mask) exists; a record still being written is a temporary file."""
    records = out / RECORDS_FOLDER
    if not records.is_dir():
        return []
    return sorted(p.name[: -len(".json")] for p in records.glob("*.json") if not p.name.startswith(".tmp-"))


def masks(out: Path) -> dict[str, int]:
    """``{mask file: mtime}`` of the visible masks."""
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz") if not p.name.startswith(".")}


def temp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.startswith(".tmp-")]


def check_mask(mask: Path, images: Path) -> None:
    image = images / mask.name.replace(".nii.gz", "_0000.nii.gz")
    written = sitk.ReadImage(str(mask))  # a truncated gzip or NIfTI fails here
    assert Geometry.of(written).mismatch(Geometry.of(sitk.ReadImage(str(image)))) is None, mask.name
    assert set(np.unique(sitk.GetArrayFromImage(written))) <= {0, 1, 2}, mask.name


@pytest.mark.slow
def test_predict_killed_mid_way_leaves_complete_files_and_a_rerun_does_the_rest(smoke_model, images, tmp_path):
    model_dir = smoke_model[0]
    out = tmp_path / "pred"
    console = tmp_path / "run1.txt"
    process = predict(model_dir, images, out, console)
    deadline = time.monotonic() + TIMEOUT_S
    while not finished(out):
        assert process.poll() is None, console.read_text()[-3000:]
        assert time.monotonic() < deadline, "no case finished in time"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(TIMEOUT_S) == -signal.SIGKILL

    done = finished(out)
    print(f"killed after {len(done)} of {NUM_CASES} cases; {len(temp_files(out))} temporary file(s) left")
    assert 1 <= len(done) < NUM_CASES
    before = masks(out)
    assert {f"{name}.nii.gz" for name in done} <= set(before)
    for name in before:  # only complete masks carry a mask's name
        check_mask(out / name, images)
    if (out / RESULTS_CSV).exists():  # written last, whole or not at all
        assert len((out / RESULTS_CSV).read_text().splitlines()) == NUM_CASES + 1

    # what a kill during a write leaves (the kill above rarely lands there): a half-written temporary file
    half = (out / f"{done[0]}.nii.gz").read_bytes()
    (out / f".tmp-killed-{done[0]}.nii.gz").write_bytes(half[: len(half) // 2])

    # rerun: the finished cases are reported and kept, the rest predicted; temporary files are gone
    console = tmp_path / "run2.txt"
    process = predict(model_dir, images, out, console)
    assert process.wait(TIMEOUT_S) == 0, console.read_text()[-3000:]
    assert f"{len(done)} of {NUM_CASES} cases already predicted" in console.read_text()
    after = masks(out)
    assert len(after) == NUM_CASES
    assert {f"{n}.nii.gz": after[f"{n}.nii.gz"] for n in done} == {f"{n}.nii.gz": before[f"{n}.nii.gz"] for n in done}
    for name in after:
        check_mask(out / name, images)
    assert len((out / RESULTS_CSV).read_text().splitlines()) == NUM_CASES + 1
    assert finished(out) == sorted(name[: -len(".nii.gz")] for name in after)
    assert temp_files(out) == []

    # --overwrite predicts every case again
    console = tmp_path / "run3.txt"
    process = predict(model_dir, images, out, console, "--overwrite")
    assert process.wait(TIMEOUT_S) == 0, console.read_text()[-3000:]
    assert "already predicted" not in console.read_text()
    redone = masks(out)
    assert all(redone[name] != after[name] for name in after)
    assert temp_files(out) == []
