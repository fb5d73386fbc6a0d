"""``predict`` under faults: a full disk mid-run, a damaged checkpoint, a model folder changed under a run."""

from __future__ import annotations

import errno
import pathlib
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

import nnunet_mtl.io
from nnunet_mtl.cli import main
from nnunet_mtl.data.subtype_csv import RESULTS_CSV, read_subtype_csv
from nnunet_mtl.inference.cases import find_input_cases
from nnunet_mtl.inference.model import load_model
from nnunet_mtl.inference.predictor import RECORDS_FOLDER, MultitaskPredictor, finished_cases
from nnunet_mtl.model.checkpoint import save_checkpoint

Usage = namedtuple("Usage", "total used free")
FULL = "cannot be written: no space left on device (free space and run again)"


@pytest.fixture(scope="module")
def model_dir(smoke_model) -> Path:
    return smoke_model[0]


def predict_argv(model_dir: Path, images: Path, out: Path) -> list[str]:
    return ["predict", "--model-dir", str(model_dir), "-i", str(images), "-o", str(out)]


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".tmp-")]


def check_complete_rerun(model_dir, images, out, capsys, stamps: dict[str, int]) -> None:
    assert main(predict_argv(model_dir, images, out)) == 0
    names = sorted(c.name for c in find_input_cases(images))
    assert sorted(read_subtype_csv(out / RESULTS_CSV)) == names
    assert {n: (out / n).stat().st_mtime_ns for n in stamps} == stamps  # the finished cases were kept
    assert not temp_files(out)
    capsys.readouterr()


def test_full_disk_while_writing_a_mask(model_dir, small_phantom, tmp_path, monkeypatch, capsys):
    """SimpleITK writes a truncated .nii.gz without an error when the disk fills: the third mask is cut off."""
    images, out = small_phantom / "test", tmp_path / "pred"
    write = sitk.WriteImage
    calls = []

    def write_until_full(image, name, *args, **kwargs):
        calls.append(name)
        write(image, name, *args, **kwargs)
        if len(calls) == 3:
            data = Path(name).read_bytes()
            Path(name).write_bytes(data[: len(data) // 2])

    monkeypatch.setattr(nnunet_mtl.io.sitk, "WriteImage", write_until_full)
    monkeypatch.setattr(nnunet_mtl.io.shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 0))
    assert main(predict_argv(model_dir, images, out)) == 1
    err = capsys.readouterr().err.strip()
    third = out / Path(calls[2]).name.split("-", 2)[-1]
    assert err == f"nnunet-mtl: error: {third}: cannot be written: no space left on device (free space and run again)"
    assert not third.exists() and not temp_files(out)
    written = sorted(p.name for p in out.glob("*.nii.gz"))
    assert len(written) == 2 and all(sitk.ReadImage(str(out / n)).GetSize() for n in written)  # whole masks
    assert sorted(f"{c}.nii.gz" for c in finished_cases(out, find_input_cases(images))) == written
    assert not (out / RESULTS_CSV).exists()
    monkeypatch.undo()  # space freed
    check_complete_rerun(model_dir, images, out, capsys, {n: (out / n).stat().st_mtime_ns for n in written})


def test_full_disk_while_writing_a_record(model_dir, small_phantom, tmp_path, monkeypatch, capsys):
    images, out = small_phantom / "test", tmp_path / "pred"
    write_text = pathlib.Path.write_text
    records = []

    def write_half_then_fail(self, text, *args, **kwargs):
        if self.parent.name == RECORDS_FOLDER:
            records.append(self)
            if len(records) == 2:
                write_text(self, text[: len(text) // 2], *args, **kwargs)
                raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", write_half_then_fail)
    assert main(predict_argv(model_dir, images, out)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(
        ".json: cannot be written: no space left on device (free space and run again)"
    )
    assert not temp_files(out)
    done = finished_cases(out, find_input_cases(images))
    assert len(done) == 1  # the second case's mask is there, but without its record it counts as not done
    monkeypatch.undo()
    first = f"{next(iter(done))}.nii.gz"
    check_complete_rerun(model_dir, images, out, capsys, {first: (out / first).stat().st_mtime_ns})


@pytest.mark.parametrize("damage", ["truncated", "flipped bytes"])
def test_damaged_checkpoint_is_a_one_line_error_naming_it(model_dir, small_phantom, tmp_path, damage, capsys):
    folder = Path(shutil.copytree(model_dir, tmp_path / "model"))
    checkpoint = folder / "fold_0" / "checkpoint_best.pth"
    data = bytearray(checkpoint.read_bytes())
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    else:  # inside a tensor: torch.load alone reads this without complaint
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    checkpoint.write_bytes(bytes(data))
    out = tmp_path / "pred"
    assert main(predict_argv(folder, small_phantom / "test", out)) == 2
    err = capsys.readouterr().err.strip()
    expected = "truncated, or not a torch archive" if damage == "truncated" else "corrupt: checksum mismatch in"
    assert err.startswith(f"nnunet-mtl: error: {checkpoint}: cannot be loaded as an nnunet-mtl checkpoint (")
    assert expected in err and "\n" not in err
    assert not out.exists()


def _perturbed(checkpoint: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)
    state["network_weights"] = {
        k: v + 0.05 if v.is_floating_point() else v for k, v in state["network_weights"].items()
    }
    save_checkpoint(state, checkpoint)


def test_a_model_changed_under_a_run_is_never_mixed_into_one_folder(model_dir, small_phantom, tmp_path):
    folder = Path(shutil.copytree(model_dir, tmp_path / "model"))
    cases = find_input_cases(small_phantom / "test")
    out = tmp_path / "pred"
    reference = MultitaskPredictor(load_model(folder)).predict_folder(cases[:1], tmp_path / "reference")

    running = MultitaskPredictor(load_model(folder))  # loaded, then the folder is retrained under it
    _perturbed(folder / "fold_0" / "checkpoint_best.pth")
    first = running.predict_folder(cases[:2], out, all_cases=cases)
    assert first[0].probabilities == reference[0].probabilities  # the weights it loaded, not the new file's
    assert first[0].settings == reference[0].settings  # and its records name those weights

    retrained = MultitaskPredictor(load_model(folder))
    assert retrained.settings != running.settings
    second = retrained.predict_folder(cases[2:], out, all_cases=cases)
    csv = read_subtype_csv(out / RESULTS_CSV)
    assert sorted(csv) == sorted(c.name for c in cases[2:])  # the last part's model only: nothing mixed
    assert {r.settings for r in second} == {retrained.settings}
    stamps = {c.name: (out / f"{c.name}.nii.gz").stat().st_mtime_ns for c in cases[:2]}
    retrained.predict_folder(cases[:2], out, all_cases=cases)  # the first part rerun with the new model
    assert all((out / f"{n}.nii.gz").stat().st_mtime_ns != t for n, t in stamps.items())  # redone
    assert sorted(read_subtype_csv(out / RESULTS_CSV)) == sorted(c.name for c in cases)
    assert {r.settings for r in finished_cases(out, cases).values()} == {retrained.settings}
