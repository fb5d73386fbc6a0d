"""Every bad input, for every command it can enter: exit code 2, one line ``nnunet-mtl: error: <path>:
<problem>`` naming the file and the problem, no traceback, and nothing new in the output folder.

Case ids read ``<command>-<bad input>``; docs/robustness.md tabulates what each gives (set
``NNUNET_MTL_BAD_INPUT_TABLE=FILE`` to write the messages of a run to FILE). Not an error and so not here:
a volume too large for the memory budget takes the sliding window instead of exhausting memory
(tests/inference/test_predictor.py::test_volume_over_the_memory_budget_takes_the_sliding_window).
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_mtl.cli import main
from nnunet_mtl.inference.choice import INFERENCE_FILE
from tests.conftest import DATASET_ID, tree_snapshot
from tests.dicom_series import write_series

PREFIX = "nnunet-mtl: error: "


@dataclass
class Bad:
    argv: list[str]
    culprit: Path | str  # a path: the message must start with it; an option or a name: the message names it
    phrase: str  # a phrase of the problem
    watched: tuple[Path, ...]  # folders that must hold nothing new afterwards
    setup: list[Callable[[], None]] = field(default_factory=list)


class Workspace:
    """The inputs of one case, each built only when the case asks for it."""

    def __init__(self, request: pytest.FixtureRequest, tmp: Path, monkeypatch: pytest.MonkeyPatch):
        self.request, self.tmp, self.monkeypatch = request, tmp, monkeypatch
        self.out = tmp / "out"  # every output goes below it, so nothing new may appear in it
        self.out.mkdir()

    @cached_property
    def phantom(self) -> Path:
        return self.request.getfixturevalue("small_phantom")

    @cached_property
    def data(self) -> Path:
        return self.request.getfixturevalue("phantom_copy")

    @cached_property
    def nnunet_root(self) -> Path:
        return self.request.getfixturevalue("nnunet_root")

    @cached_property
    def images(self) -> Path:
        return Path(shutil.copytree(self.phantom / "test", self.tmp / "images"))

    @property
    def first_image(self) -> Path:
        return sorted(self.images.glob("*_0000.nii.gz"))[0]

    @cached_property
    def model(self) -> Path:
        return self.request.getfixturevalue("smoke_model")[0]

    @cached_property
    def model_copy(self) -> Path:
        copy = self.tmp / "model"
        for name in ("plans.json", "dataset.json", "fold_0/checkpoint_best.pth"):
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.model / name, copy / name)
        return copy

    @property
    def checkpoint(self) -> Path:
        return self.model_copy / "fold_0" / "checkpoint_best.pth"

    @cached_property
    def truth(self) -> Path:
        return Path(shutil.copytree(self.phantom / "test_key", self.tmp / "truth"))

    @cached_property
    def pred(self) -> Path:
        pred = self.tmp / "pred"
        pred.mkdir()
        for mask in self.truth.glob("*.nii.gz"):
            shutil.copyfile(mask, pred / mask.name)
        shutil.copyfile(self.truth / "labels.csv", pred / "subtype_results.csv")
        return pred

    @cached_property
    def blocker(self) -> Path:
        """A regular file where a folder would have to be."""
        path = self.tmp / "blocker"
        path.write_text("a file, not a folder\n")
        return path

    def unwritable(self, folder: Path) -> None:
        """Make ``folder`` refuse new files as far as the command can tell (tests may run as root)."""
        access = os.access
        self.monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != folder and access(path, mode))

    def dicom_series(self, folder: Path, slices: int = 4, series: int = 1) -> Path:
        image = sitk.ReadImage(str(sorted((self.phantom / "test").glob("*_0000.nii.gz"))[0]))
        return write_series(image[:, :, :slices], folder, series)


# ------------------------------------------------------------------------------------ damage to files


def _rewrite(path: Path, change: Callable[[sitk.Image], sitk.Image]) -> None:
    sitk.WriteImage(change(sitk.ReadImage(str(path))), str(path), useCompression=True)


def _with_array(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def _one_voxel(value: float) -> Callable[[sitk.Image], sitk.Image]:
    def change(image: sitk.Image) -> sitk.Image:
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        array.flat[array.size // 2] = value
        return _with_array(image, array)

    return change


def _labels(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[sitk.Image], sitk.Image]:
    return lambda image: _with_array(image, change(sitk.GetArrayFromImage(image)))


VOLUME_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty-file": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "corrupt-gzip": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "corrupt or truncated gzip"),
    "not-gzip": (lambda p: p.write_text("plain text named .nii.gz\n"), "not gzip-compressed"),
    "not-nifti": (lambda p: p.write_bytes(gzip.compress(b"not a NIfTI header " * 40)), "not a readable NIfTI image"),
    "2d-image": (lambda p: _rewrite(p, lambda i: i[:, :, 0]), "is 2D; expected a 3D volume"),
    "4d-image": (lambda p: _rewrite(p, lambda i: sitk.JoinSeries([i, i])), "is 4D; expected a 3D volume"),
    "two-channels": (lambda p: _rewrite(p, lambda i: sitk.Compose(i, i)), "has 2 channels per voxel"),
    "nan-values": (lambda p: _rewrite(p, _one_voxel(np.nan)), "contains NaN or infinite values"),
    "inf-values": (lambda p: _rewrite(p, _one_voxel(np.inf)), "contains NaN or infinite values"),
}
MASK_DAMAGE: dict[str, tuple[Callable[[sitk.Image], sitk.Image], str]] = {
    "label-3": (_labels(lambda a: np.where(a > 1.5, 3, np.rint(a)).astype(np.uint8)), "label 3 outside {0, 1, 2}"),
    "non-integer-label": (_labels(lambda a: a.astype(np.float32) * 0.75), "is not an integer label"),
    "shape-mismatch": (lambda m: m[1:, :, :], "shape"),
    "spacing-mismatch": (lambda m: (m.SetSpacing((1.0, 1.0, 3.0)), m)[1], "spacing"),
    "origin-mismatch": (lambda m: (m.SetOrigin((5.0, 5.0, 5.0)), m)[1], "origin"),
    "direction-mismatch": (lambda m: (m.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1)), m)[1], "direction"),
}
MODEL_DAMAGE = [
    "model-folder-missing",
    "missing-plans",
    "missing-dataset-json",
    "missing-checkpoint",
    "checkpoint-not-torch",
    "checkpoint-pickled-code",
    "checkpoint-other-dataset",
    "checkpoint-other-labels",
]


def _edit_checkpoint(path: Path, change: Callable[[dict], None]) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def _damage_model(kind: str, ws: Workspace) -> tuple[Path, Path, str]:
    """(model folder to use, culprit, phrase)."""
    model = ws.model_copy
    if kind == "model-folder-missing":
        return ws.tmp / "no_model", ws.tmp / "no_model", "model folder not found"
    if kind == "missing-plans":
        (model / "plans.json").unlink()
        return model, model / "plans.json", "missing from the model folder"
    if kind == "missing-dataset-json":
        (model / "dataset.json").unlink()
        return model, model / "dataset.json", "missing from the model folder"
    if kind == "missing-checkpoint":
        ws.checkpoint.unlink()
        return model, model, "no fold_*/checkpoint_best.pth in the model folder"
    if kind == "checkpoint-not-torch":
        ws.checkpoint.write_bytes(b"not a checkpoint")
        return model, ws.checkpoint, "cannot be loaded"
    if kind == "checkpoint-pickled-code":
        _edit_checkpoint(ws.checkpoint, lambda s: s.update(extra=argparse.Namespace(code="pickled")))
        return model, ws.checkpoint, "cannot be loaded as an nnunet-mtl checkpoint"
    if kind == "checkpoint-other-dataset":
        _edit_checkpoint(ws.checkpoint, lambda s: s["multitask"].update(dataset_name="Dataset999_Other"))
        return model, ws.checkpoint, "trained on dataset Dataset999_Other"
    if kind == "checkpoint-other-labels":
        _edit_checkpoint(ws.checkpoint, lambda s: s["multitask"].update(labels={"background": 0, "organ": 1}))
        return model, ws.checkpoint, "label set differs"
    if kind == "inference-choice-damaged":
        (model / "fold_0" / INFERENCE_FILE).write_text('{"path": "tiles", "mirroring": false}')
        return model, model / "fold_0" / INFERENCE_FILE, "unknown path 'tiles'"
    raise AssertionError(kind)


def _damage_output(kind: str, ws: Workspace, out: Path) -> tuple[Path, Path, str]:
    """(output folder to use, culprit, phrase); ``out`` is the folder the command would write."""
    if kind == "out-is-file":
        return ws.blocker, ws.blocker, "output folder is an existing file"
    if kind == "out-under-file":
        return ws.blocker / "out", ws.blocker / "out", f"cannot be created: {ws.blocker} is a file"
    if kind == "out-unwritable":
        ws.unwritable(out.parent)
        return out, out, "output folder cannot be written"
    raise AssertionError(kind)


OUTPUT_DAMAGE = ["out-is-file", "out-under-file", "out-unwritable"]


# ------------------------------------------------------------------------------------ the commands


def phantom_case(kind: str, ws: Workspace) -> Bad:
    out = ws.out / "phantom"
    options = {
        "shape-zero": (["--shape", "0,48,48"], "--shape", "of 16 to 512 voxels"),
        "shape-negative": (["--shape=-32,48,48"], "--shape", "of 16 to 512 voxels"),
        "shape-two-sizes": (["--shape", "32,48"], "--shape", "three sizes"),
        "shape-not-integers": (["--shape", "a,b,c"], "--shape", "expected comma-separated integers"),
        "train-negative": (["--train=2,-1,2"], "--train", "3 non-negative case counts"),
        "train-two-counts": (["--train", "2,2"], "--train", "3 non-negative case counts"),
        "validation-empty": (["--validation", "0,0,0"], "--validation", "at least one case"),
        "test-negative": (["--test=-1"], "--test", "must be >= 0"),
        "seed-negative": (["--seed=-1"], "--seed", "must be >= 0"),
    }
    if kind in options:
        extra, culprit, phrase = options[kind]
        return Bad(["phantom", str(out), *extra], culprit, phrase, (ws.out,))
    if kind == "out-not-empty":
        out.mkdir()
        (out / "keep.txt").write_text("x")
        return Bad(["phantom", str(out)], out, "exists and is not empty", (ws.out,))
    out, culprit, phrase = _damage_output(kind, ws, out)
    return Bad(["phantom", str(out)], culprit, phrase, (ws.out, ws.tmp))


PHANTOM = [
    "shape-zero",
    "shape-negative",
    "shape-two-sizes",
    "shape-not-integers",
    "train-negative",
    "train-two-counts",
    "validation-empty",
    "test-negative",
    "seed-negative",
    "out-not-empty",
    *OUTPUT_DAMAGE,
]


def _first_train_image(data: Path) -> Path:
    return sorted((data / "train" / "subtype0").glob("*_0000.nii.gz"))[0]


def _mask_of(image: Path) -> Path:
    return image.with_name(image.name.replace("_0000.nii.gz", ".nii.gz"))


def _damage_layout(kind: str, data: Path) -> tuple[Path, str]:
    """Damage an assignment-layout folder (``data`` with train/validation/test); (culprit, phrase)."""
    image = _first_train_image(data)
    mask = _mask_of(image)
    if kind == "missing-image":
        image.unlink()
        return mask, "mask has no image"
    if kind == "missing-mask":
        mask.unlink()
        return image, "image has no mask"
    if kind == "unknown-subtype-folder":
        (data / "train" / "subtype3").mkdir()
        return data / "train" / "subtype3", "unexpected entry"
    if kind == "stray-file":
        (data / "train" / "subtype1" / "notes.txt").write_text("x")
        return data / "train" / "subtype1" / "notes.txt", "unexpected file"
    if kind == "second-channel":
        shutil.copy(image, image.with_name(image.name.replace("_0000", "_0001")))
        return image.with_name(image.name.replace("_0000", "_0001")), "only one channel"
    if kind == "test-image-name":
        renamed = data / "test" / "quiz_999.nii.gz"
        sorted((data / "test").glob("*.nii.gz"))[0].rename(renamed)
        return renamed, "image not named <case>_0000.nii.gz"
    if kind == "case-in-two-splits":
        target = data / "validation" / "subtype0"
        shutil.copy(image, target / image.name)
        shutil.copy(mask, target / mask.name)
        return target / image.name, "also appears as"
    if kind == "empty-split":
        shutil.rmtree(data / "validation")
        (data / "validation").mkdir()
        return data / "validation", "no cases found"
    if kind == "missing-split":
        shutil.rmtree(data / "validation")
        return data / "validation", "folder not found"
    if kind == "subtype-in-name-differs":
        moved = data / "train" / "subtype1"
        shutil.move(image, moved / image.name)
        shutil.move(mask, moved / mask.name)
        return moved / mask.name, "name says subtype 0"
    raise AssertionError(kind)


LAYOUT_DAMAGE = [
    "missing-image",
    "missing-mask",
    "unknown-subtype-folder",
    "stray-file",
    "second-channel",
    "test-image-name",
    "case-in-two-splits",
    "empty-split",
    "missing-split",
    "subtype-in-name-differs",
]


def prepare_case(kind: str, ws: Workspace) -> Bad:
    data, raw = ws.data, ws.nnunet_root / "nnUNet_raw"
    argv = ["prepare", str(data), "--dataset-id", "70"]
    watched = (ws.nnunet_root,)
    image = _first_train_image(data)
    if kind in LAYOUT_DAMAGE:
        culprit, phrase = _damage_layout(kind, data)
    elif kind in VOLUME_DAMAGE:
        damage, phrase = VOLUME_DAMAGE[kind]
        damage(image)
        culprit = image
    elif kind.startswith("mask-") and kind.removeprefix("mask-") in VOLUME_DAMAGE:
        damage, phrase = VOLUME_DAMAGE[kind.removeprefix("mask-")]
        damage(_mask_of(image))
        culprit = _mask_of(image)
    elif kind in MASK_DAMAGE:
        change, phrase = MASK_DAMAGE[kind]
        _rewrite(_mask_of(image), change)
        culprit = _mask_of(image)
    elif kind == "dataset-id-out-of-range":
        argv[-1], culprit, phrase = "1000", "--dataset-id", "must be in 1..999"
    elif kind == "dataset-id-taken":
        assert main(["prepare", str(ws.phantom), "--dataset-id", "71", "--name", "First"]) == 0
        argv[-1], culprit, phrase = "71", raw / "Dataset071_First", "already used by another dataset"
    elif kind in ("out-under-file", "out-unwritable"):
        raw, culprit, phrase = _damage_output(kind, ws, ws.out / "nnUNet_raw")
        ws.monkeypatch.setenv("nnUNet_raw", str(raw))
        watched = (ws.nnunet_root, ws.out)
    else:
        raise AssertionError(kind)
    return Bad(argv, culprit, phrase, watched)


PREPARE = [
    *LAYOUT_DAMAGE,
    *VOLUME_DAMAGE,
    *(f"mask-{kind}" for kind in ("empty-file", "corrupt-gzip", "not-nifti", "4d-image", "nan-values")),
    *MASK_DAMAGE,
    "dataset-id-out-of-range",
    "dataset-id-taken",
    "out-under-file",
    "out-unwritable",
]


def train_case(kind: str, ws: Workspace) -> Bad:
    argv = ["train", "--dataset-id", str(DATASET_ID)]
    raw = ws.nnunet_root / "nnUNet_raw"
    if kind != "unknown-dataset":
        ws.request.getfixturevalue("planned_dataset")
    splits = raw / f"Dataset{DATASET_ID:03d}_PancreasMTL" / "splits_final.json"
    cases = {
        "unknown-dataset": (["--dataset-id", "997"], raw, "no dataset 997 (Dataset997_*)"),
        "unknown-fold": (["--fold", "1"], splits, "has no fold 1 (folds 0..0"),
        "negative-fold": (["--fold=-1"], splits, "has no fold -1"),
        "unknown-preset": (["--preset", "huge"], "--preset", "invalid choice"),
        "num-gpus-zero": (["--num-gpus", "0"], "--num-gpus", "must be at least 1"),
        "num-processes-zero": (["--num-processes", "0"], "--num-processes", "must be at least 1"),
        "validation-only-untrained": (
            ["--validation-only"],
            ws.nnunet_root
            / "nnUNet_results"
            / f"Dataset{DATASET_ID:03d}_PancreasMTL"
            / "nnUNetTrainerMultitaskTiny__nnUNetMTLTinyPlans__3d_fullres"
            / "fold_0"
            / "checkpoint_best.pth",
            "not found: --validation-only validates a model trained earlier",
        ),
        "validation-only-continue": (["--validation-only", "--continue"], "--validation-only", "leave out --continue"),
    }
    if kind in cases:
        extra, culprit, phrase = cases[kind]
        return Bad([*argv, *extra], culprit, phrase, (ws.nnunet_root,))
    results = ws.out / "nnUNet_results"
    results, culprit, phrase = _damage_output(kind, ws, results)
    ws.monkeypatch.setenv("nnUNet_results", str(results))
    return Bad(argv, culprit, phrase, (ws.nnunet_root, ws.out))


TRAIN = [
    "unknown-dataset",
    "unknown-fold",
    "negative-fold",
    "unknown-preset",
    "num-gpus-zero",
    "num-processes-zero",
    "validation-only-untrained",
    "validation-only-continue",
    "out-under-file",
    "out-unwritable",
]


def _damage_inputs(kind: str, ws: Workspace) -> tuple[Path, Path, str]:
    """Damage predict's input folder; (input folder, culprit, phrase)."""
    images, first = ws.images, ws.first_image
    if kind in VOLUME_DAMAGE:
        damage, phrase = VOLUME_DAMAGE[kind]
        damage(first)
        return images, first, phrase
    if kind == "image-name":
        renamed = first.with_name("quiz_999.nii.gz")
        first.rename(renamed)
        return images, renamed, "image not named <case>_0000.nii.gz"
    if kind == "stray-file":
        (images / "notes.txt").write_text("x")
        return images, images / "notes.txt", "unexpected file"
    if kind == "second-channel":
        second = first.with_name(first.name.replace("_0000", "_0001"))
        shutil.copy(first, second)
        return images, second, "only one channel"
    if kind == "unknown-folder":
        (images / "extra").mkdir()
        (images / "extra" / "notes.txt").write_text("x")
        return images, images / "extra", "unexpected folder"
    if kind == "no-images":
        (ws.tmp / "empty").mkdir()
        return ws.tmp / "empty", ws.tmp / "empty", "no images found"
    if kind == "input-missing":
        return ws.tmp / "nowhere", ws.tmp / "nowhere", "input folder not found"
    if kind == "case-given-twice":
        ws.dicom_series(images / first.name.removesuffix("_0000.nii.gz"))
        return images, first, "given twice"
    if kind in ("split-unknown-subtype-folder", "split-missing-mask"):
        split = Path(shutil.copytree(ws.phantom / "validation", ws.tmp / "validation"))
        if kind == "split-unknown-subtype-folder":
            (split / "subtype3").mkdir()
            return split, split / "subtype3", "unexpected entry"
        image = sorted(split.glob("subtype0/*_0000.nii.gz"))[0]
        _mask_of(image).unlink()
        return split, image, "image has no mask"
    return _damage_dicom(kind, ws)


def _damage_dicom(kind: str, ws: Workspace) -> tuple[Path, Path, str]:
    series = ws.images / "series"
    if kind == "dicom-several-series":
        ws.dicom_series(series, series=1)
        ws.dicom_series(series, series=2)
        return ws.images, series, "holds 2 DICOM series"
    if kind == "dicom-damaged-slice":
        ws.dicom_series(series)
        damaged = sorted(series.iterdir())[1]
        damaged.write_bytes(damaged.read_bytes()[:200])
        return ws.images, damaged, "not a readable slice of the DICOM series"
    if kind == "dicom-missing-slice":
        ws.dicom_series(series, slices=6)
        sorted(series.iterdir())[2].unlink()
        return ws.images, series, "slices are not evenly spaced"
    if kind == "dicom-single-slice":
        ws.dicom_series(series, slices=1)
        return ws.images, series, "holds a single slice"
    if kind == "dicom-nested-folder":
        ws.dicom_series(series)
        (series / "more").mkdir()
        return ws.images, series / "more", "unexpected folder inside a DICOM series folder"
    raise AssertionError(kind)


INPUT_DAMAGE = [
    *VOLUME_DAMAGE,
    "image-name",
    "stray-file",
    "second-channel",
    "unknown-folder",
    "no-images",
    "input-missing",
    "case-given-twice",
    "split-unknown-subtype-folder",
    "split-missing-mask",
    "dicom-several-series",
    "dicom-damaged-slice",
    "dicom-missing-slice",
    "dicom-single-slice",
    "dicom-nested-folder",
]


def predict_case(kind: str, ws: Workspace) -> Bad:
    inputs, model, out = ws.images, ws.model, ws.out / "pred"
    extra: list[str] = []
    if kind in INPUT_DAMAGE:
        inputs, culprit, phrase = _damage_inputs(kind, ws)
    elif kind in [*MODEL_DAMAGE, "inference-choice-damaged"]:
        model, culprit, phrase = _damage_model(kind, ws)
    elif kind in OUTPUT_DAMAGE:
        out, culprit, phrase = _damage_output(kind, ws, out)
    elif kind == "out-inside-input":
        out, culprit, phrase = inputs / "pred", inputs / "pred", "lies inside the input folder"
    elif kind == "no-model-given":
        return Bad(["predict", "-i", str(inputs), "-o", str(out)], "--model-dir", "give --dataset-id", (ws.out,))
    elif kind == "unknown-dataset-id":
        argv = ["predict", "--dataset-id", "997", "-i", str(inputs), "-o", str(out)]
        return Bad(argv, ws.nnunet_root / "nnUNet_raw", "no dataset 997", (ws.out,))
    elif kind == "tile-step-zero":
        extra, culprit, phrase = ["--tile-step-size", "0"], "--tile-step-size", "must be in (0, 1]"
    else:
        raise AssertionError(kind)
    argv = ["predict", "--model-dir", str(model), "-i", str(inputs), "-o", str(out), *extra]
    return Bad(argv, culprit, phrase, (ws.out, ws.images))


PREDICT = [
    *INPUT_DAMAGE,
    *MODEL_DAMAGE,
    "inference-choice-damaged",
    "no-model-given",
    "unknown-dataset-id",
    *OUTPUT_DAMAGE,
    "out-inside-input",
    "tile-step-zero",
]


def evaluate_case(kind: str, ws: Workspace) -> Bad:
    pred, truth = ws.pred, ws.truth
    first_pred, first_truth = sorted(pred.glob("*.nii.gz"))[0], sorted(truth.glob("*.nii.gz"))[0]
    extra: list[str] = []
    watched = (ws.pred, ws.out)
    if kind in VOLUME_DAMAGE:
        damage, phrase = VOLUME_DAMAGE[kind]
        damage(first_pred)
        culprit = first_pred
    elif kind in MASK_DAMAGE:
        change, phrase = MASK_DAMAGE[kind]
        _rewrite(first_pred, change)
        culprit = first_pred
    elif kind == "missing-prediction":
        first_pred.unlink()
        culprit, phrase = first_pred, "prediction missing for truth case"
    elif kind == "pred-folder-missing":
        pred, culprit, phrase = ws.tmp / "nowhere", ws.tmp / "nowhere", "prediction folder not found"
    elif kind == "truth-folder-missing":
        truth, culprit, phrase = ws.tmp / "nowhere", ws.tmp / "nowhere", "truth folder not found"
    elif kind.startswith("truth-") and kind.removeprefix("truth-") in VOLUME_DAMAGE:
        damage, phrase = VOLUME_DAMAGE[kind.removeprefix("truth-")]
        damage(first_truth)
        culprit = first_truth
    elif kind == "truth-label-3":
        change, phrase = MASK_DAMAGE["label-3"]
        _rewrite(first_truth, change)
        culprit = first_truth
    elif kind == "truth-stray-nifti":  # other files (labels.csv, nnU-Net's JSON files) are not read
        shutil.copyfile(first_truth, truth / "quiz_777.nii")
        culprit, phrase = truth / "quiz_777.nii", "not a truth mask"
    elif kind == "truth-unknown-subtype-folder":
        truth = Path(shutil.copytree(ws.phantom / "validation", ws.tmp / "validation"))
        (truth / "subtype3").mkdir()
        culprit, phrase = truth / "subtype3", "unexpected entry"
    elif kind == "csv-bad-header":
        (pred / "subtype_results.csv").write_text("name,subtype\nquiz_1.nii.gz,1\n")
        culprit, phrase = pred / "subtype_results.csv", "header must be exactly Names,Subtype"
    elif kind == "csv-subtype-out-of-range":
        (pred / "subtype_results.csv").write_text(f"Names,Subtype\n{first_pred.name},7\n")
        culprit, phrase = pred / "subtype_results.csv", "subtype 7 outside 0..2"
    elif kind == "csv-missing-case":
        (pred / "subtype_results.csv").write_text("Names,Subtype\n")
        culprit, phrase = pred / "subtype_results.csv", "no predicted subtype for case"
    elif kind == "labels-csv-missing":
        extra = ["--labels", str(ws.tmp / "labels.csv")]
        culprit, phrase = ws.tmp / "labels.csv", "file not found"
    elif kind in OUTPUT_DAMAGE:
        out, culprit, phrase = _damage_output(kind, ws, ws.out / "evaluation")
        extra = ["--out", str(out)]
    elif kind == "default-out-unwritable":
        ws.unwritable(pred)
        culprit, phrase = pred / "evaluation", "output folder cannot be written"
    else:
        raise AssertionError(kind)
    return Bad(["evaluate", "--pred", str(pred), "--truth", str(truth), *extra], culprit, phrase, watched)


EVALUATE = [
    *VOLUME_DAMAGE,
    *MASK_DAMAGE,
    "missing-prediction",
    "pred-folder-missing",
    "truth-folder-missing",
    *(f"truth-{kind}" for kind in ("empty-file", "corrupt-gzip", "4d-image", "nan-values")),
    "truth-label-3",
    "truth-stray-nifti",
    "truth-unknown-subtype-folder",
    "csv-bad-header",
    "csv-subtype-out-of-range",
    "csv-missing-case",
    "labels-csv-missing",
    *OUTPUT_DAMAGE,
    "default-out-unwritable",
]


def benchmark_case(kind: str, ws: Workspace) -> Bad:
    inputs, model, out = ws.images, ws.model, ws.out / "bench"
    extra: list[str] = []
    if kind in ("nan-values", "corrupt-gzip", "stray-file"):
        inputs, culprit, phrase = _damage_inputs(kind, ws)
    elif kind == "dicom-input":
        ws.dicom_series(inputs / "series")
        culprit, phrase = inputs / "series", "is a DICOM series"
    elif kind in MODEL_DAMAGE:
        model, culprit, phrase = _damage_model(kind, ws)
    elif kind in ("truth-label-3", "truth-missing-case"):
        first = sorted(ws.truth.glob("*.nii.gz"))[0]
        extra = ["--truth", str(ws.truth)]
        if kind == "truth-label-3":
            _rewrite(first, MASK_DAMAGE["label-3"][0])
            culprit, phrase = first, "label 3 outside"
        else:
            first.unlink()
            culprit, phrase = ws.truth, f"no truth mask for case {first.name.removesuffix('.nii.gz')}"
    elif kind in OUTPUT_DAMAGE:
        out, culprit, phrase = _damage_output(kind, ws, out)
    elif kind == "max-cases-negative":
        extra, culprit, phrase = ["--max-cases=-1"], "--max-cases", "must be >= 0"
    elif kind == "two-checkpoints":
        extra, culprit, phrase = ["--checkpoint", "best", "final"], "--checkpoint", "single --checkpoint"
    elif kind == "unknown-row":
        extra, culprit, phrase = ["--methods", "c", "e"], "--methods", "unknown row(s) e"
    else:
        raise AssertionError(kind)
    argv = ["benchmark", "--model-dir", str(model), "-i", str(inputs), "--out", str(out), *extra]
    return Bad(argv, culprit, phrase, (ws.out,))


BENCHMARK = [
    "nan-values",
    "corrupt-gzip",
    "stray-file",
    "dicom-input",
    "missing-plans",
    "missing-checkpoint",
    "checkpoint-other-dataset",
    "checkpoint-other-labels",
    "truth-label-3",
    "truth-missing-case",
    *OUTPUT_DAMAGE,
    "max-cases-negative",
    "two-checkpoints",
    "unknown-row",
]


def export_seg_case(kind: str, ws: Workspace) -> Bad:
    model, out = ws.model, ws.out / "stock"
    if kind == "missing-checkpoint":  # export-seg names its folds (default 0)
        ws.checkpoint.unlink()
        model, culprit, phrase = ws.model_copy, ws.checkpoint, "checkpoint not found"
    elif kind in MODEL_DAMAGE:
        model, culprit, phrase = _damage_model(kind, ws)
    else:
        out, culprit, phrase = _damage_output(kind, ws, out)
    return Bad(["export-seg", "--model-dir", str(model), "--out", str(out)], culprit, phrase, (ws.out,))


EXPORT_SEG = [
    "model-folder-missing",
    "missing-plans",
    "missing-dataset-json",
    "missing-checkpoint",
    "checkpoint-other-dataset",
    "checkpoint-other-labels",
    *OUTPUT_DAMAGE,
]

COMMANDS: dict[str, tuple[Callable[[str, Workspace], Bad], list[str]]] = {
    "phantom": (phantom_case, PHANTOM),
    "prepare": (prepare_case, PREPARE),
    "train": (train_case, TRAIN),
    "predict": (predict_case, PREDICT),
    "evaluate": (evaluate_case, EVALUATE),
    "benchmark": (benchmark_case, BENCHMARK),
    "export-seg": (export_seg_case, EXPORT_SEG),
}
CASES = [
    pytest.param(command, kind, id=f"{command}-{kind}") for command, (_, kinds) in COMMANDS.items() for kind in kinds
]


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        return int(exit_.code)


@pytest.mark.parametrize(("command", "kind"), CASES)
def test_bad_input(command, kind, request, tmp_path, monkeypatch, capfd):
    workspace = Workspace(request, tmp_path, monkeypatch)
    bad = COMMANDS[command][0](kind, workspace)
    capfd.readouterr()
    before = {folder: tree_snapshot(folder) for folder in bad.watched}
    code = _run(bad.argv)
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    _record(f"{command}-{kind}", code, lines, tmp_path)
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(PREFIX), lines[0]
    if isinstance(bad.culprit, Path):
        assert lines[0].startswith(f"{PREFIX}{bad.culprit}: "), lines[0]
        assert bad.phrase in lines[0].removeprefix(f"{PREFIX}{bad.culprit}: "), lines[0]
    else:
        assert bad.culprit in lines[0] and bad.phrase in lines[0], lines[0]
    assert {folder: tree_snapshot(folder) for folder in bad.watched} == before


def _record(case: str, code: int, lines: list[str], tmp_path: Path) -> None:
    table = os.environ.get("NNUNET_MTL_BAD_INPUT_TABLE")
    if table:
        message = " / ".join(lines).replace(str(tmp_path), "TMP")
        with open(table, "a") as handle:
            handle.write(f"{case}\t{code}\t{message}\n")
