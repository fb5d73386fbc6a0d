"""The assignment layout that users have on disk.

::

    DATA_DIR/train/subtype{0,1,2}/quiz_<s>_<id>.nii.gz        mask
    DATA_DIR/train/subtype{0,1,2}/quiz_<s>_<id>_0000.nii.gz   image
    DATA_DIR/validation/...                                   same as train
    DATA_DIR/test/quiz_<id>_0000.nii.gz                       image only (optional folder)

Rules (strict on purpose, so nothing is silently dropped): hidden entries (names starting with ``.``) are
ignored; any other unexpected folder or file (``subtype3/``, ``notes.txt``, a second channel ``_0001``)
is refused with an error naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_mtl.data.labels import NUM_SUBTYPES
from nnunet_mtl.errors import InputError
from nnunet_mtl.io import NIFTI_SUFFIX

LABELLED_SPLITS = ("train", "validation")
TEST_SPLIT = "test"
CHANNEL_SUFFIX = "_0000"
SUBTYPE_FOLDERS = {f"subtype{k}": k for k in range(NUM_SUBTYPES)}
_EXTRA_CHANNEL = re.compile(r"_(\d{4})$")
_SUBTYPE_IN_NAME = re.compile(r"^quiz_(\d+)_")
_QUIZ_ID = re.compile(r"^quiz_(?:\d+_)?([^_]+)$")


@dataclass(frozen=True)
class Case:
    name: str
    image: Path
    mask: Path | None = None
    subtype: int | None = None


@dataclass(frozen=True)
class AssignmentData:
    root: Path
    train: list[Case]
    validation: list[Case]
    test: list[Case] = field(default_factory=list)

    @property
    def labelled(self) -> list[Case]:
        return self.train + self.validation


def case_id(name: str) -> str:
    """The patient id of a case: ``041`` for ``quiz_0_041`` and ``quiz_041``; other names are their own id."""
    match = _QUIZ_ID.match(name)
    return match.group(1) if match else name


def _visible_entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _nifti_stem(path: Path) -> str:
    if not path.name.endswith(NIFTI_SUFFIX):
        raise InputError(path, f"unexpected file (expected {NIFTI_SUFFIX} images and masks only)")
    return path.name[: -len(NIFTI_SUFFIX)]


def _check_single_channel(path: Path, stem: str) -> None:
    match = _EXTRA_CHANNEL.search(stem)
    if match and match.group(1) != "0000":
        raise InputError(path, "extra image channel; only one channel (_0000) is supported")


def scan_subtype_folder(folder: Path, subtype: int) -> list[Case]:
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for path in _visible_entries(folder):
        if path.is_dir():
            raise InputError(path, "unexpected folder inside a subtype folder")
        stem = _nifti_stem(path)
        _check_single_channel(path, stem)
        if stem.endswith(CHANNEL_SUFFIX):
            images[stem[: -len(CHANNEL_SUFFIX)]] = path
        else:
            masks[stem] = path
    for name in sorted(set(images) | set(masks)):
        if name not in images:
            raise InputError(masks[name], f"mask has no image (expected {name}{CHANNEL_SUFFIX}{NIFTI_SUFFIX})")
        if name not in masks:
            raise InputError(images[name], f"image has no mask (expected {name}{NIFTI_SUFFIX})")
        named = _SUBTYPE_IN_NAME.match(name)
        if named and int(named.group(1)) != subtype:
            raise InputError(masks[name], f"name says subtype {named.group(1)} but it lies in subtype{subtype}/")
    return [Case(name, images[name], masks[name], subtype) for name in sorted(images)]


def scan_labelled_split(split_dir: Path) -> list[Case]:
    if not split_dir.is_dir():
        raise InputError(split_dir, "folder not found")
    cases: list[Case] = []
    for path in _visible_entries(split_dir):
        if not path.is_dir() or path.name not in SUBTYPE_FOLDERS:
            raise InputError(path, f"unexpected entry (expected only {', '.join(SUBTYPE_FOLDERS)} folders)")
        cases += scan_subtype_folder(path, SUBTYPE_FOLDERS[path.name])
    if not cases:
        raise InputError(split_dir, "no cases found (expected subtypeK/<case>.nii.gz + <case>_0000.nii.gz)")
    return cases


def flat_image_case(path: Path) -> Case:
    """A ``<case>_0000.nii.gz`` image of a flat folder (``test/``, or an input folder of ``predict``)."""
    stem = _nifti_stem(path)
    _check_single_channel(path, stem)
    if not stem.endswith(CHANNEL_SUFFIX):
        raise InputError(path, f"image not named <case>{CHANNEL_SUFFIX}{NIFTI_SUFFIX}")
    return Case(stem[: -len(CHANNEL_SUFFIX)], path)


def scan_test_split(test_dir: Path) -> list[Case]:
    if not test_dir.is_dir():
        raise InputError(test_dir, "folder not found")
    cases = []
    for path in _visible_entries(test_dir):
        if path.is_dir():
            raise InputError(path, "unexpected folder in test/")
        cases.append(flat_image_case(path))
    if not cases:
        raise InputError(test_dir, "no test images found")
    return cases


def scan_assignment_data(root: Path) -> AssignmentData:
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "data folder not found")
    train = scan_labelled_split(root / "train")
    validation = scan_labelled_split(root / "validation")
    test = scan_test_split(root / TEST_SPLIT) if (root / TEST_SPLIT).exists() else []
    seen: dict[str, Path] = {}
    for case in train + validation + test:
        key = case_id(case.name)
        if key in seen:
            raise InputError(case.image, f"case id {key} also appears as {seen[key]}")
        seen[key] = case.image
    return AssignmentData(root, train, validation, test)
