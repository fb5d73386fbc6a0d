"""Convert the assignment layout into an nnU-Net v2 raw dataset with region labels and the kept split.

Writes ``$nnUNet_raw/DatasetNNN_NAME/``:

* ``imagesTr/<case>_0000.nii.gz`` + ``labelsTr/<case>.nii.gz`` for train and validation cases (masks
  rounded to uint8; images copied byte for byte), ``imagesTs/`` for test images;
* ``dataset.json`` with regions ``whole_pancreas = [1, 2]`` and ``pancreas_lesion = 2``;
* ``subtypes.json``: ``{case: subtype}`` for every labelled case;
* ``splits_final.json``: one fold, the original train/validation split. nnU-Net's planner copies it to
  ``$nnUNet_preprocessed/DatasetNNN_NAME/``, so nnU-Net's fold 0 is exactly that split.

Every pair is checked before anything is written; the dataset is built under a temporary name and
renamed into place, so a failure leaves no partial dataset and a rerun replaces the old one whole.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from nnunet_mtl.data.labels import NNUNET_LABELS, REGIONS_CLASS_ORDER, round_labels
from nnunet_mtl.data.layout import CHANNEL_SUFFIX, AssignmentData, Case, scan_assignment_data
from nnunet_mtl.errors import InputError
from nnunet_mtl.io import (
    NIFTI_SUFFIX,
    Geometry,
    array_of,
    check_writable_dir,
    read_volume,
    staged_directory,
    write_text_atomic,
)
from nnunet_mtl.paths import dataset_folder_name, datasets_with_id, ensure_nnunet_env

SUBTYPES_FILE = "subtypes.json"
SPLITS_FILE = "splits_final.json"
DEFAULT_NAME = "PancreasMTL"
IO_THREADS = 4  # SimpleITK releases the GIL while (de)compressing


@dataclass(frozen=True)
class PreparedDataset:
    folder: Path
    num_training: int
    num_test: int


@dataclass(frozen=True)
class _CheckedCase:
    case: Case
    labels: sitk.Image | None  # uint8 label map in the image's geometry (None for test cases)


def _check_case(case: Case) -> _CheckedCase:
    image = read_volume(case.image)
    if case.mask is None:
        return _CheckedCase(case, None)
    mask = read_volume(case.mask)
    problem = Geometry.of(mask).mismatch(Geometry.of(image))
    if problem:
        raise InputError(case.mask, f"mask does not match its image {case.image.name}: {problem}")
    labels = sitk.GetImageFromArray(round_labels(array_of(mask), case.mask))
    labels.CopyInformation(image)
    return _CheckedCase(case, labels)


def _checked(cases: Iterable[Case]) -> Iterable[_CheckedCase]:
    """Check cases in parallel but report (and stop at) the first bad one in listing order."""
    with ThreadPoolExecutor(IO_THREADS) as pool:
        yield from pool.map(_check_case, cases)


def original_split(data: AssignmentData) -> list[dict[str, list[str]]]:
    return [{"train": [c.name for c in data.train], "val": [c.name for c in data.validation]}]


def _write_dataset(stage: Path, data: AssignmentData, name: str, progress: Callable) -> None:
    for sub in ("imagesTr", "labelsTr"):
        (stage / sub).mkdir()
    for checked in progress(_checked(data.labelled), len(data.labelled), "check+copy train/val"):
        case = checked.case
        shutil.copyfile(case.image, stage / "imagesTr" / f"{case.name}{CHANNEL_SUFFIX}{NIFTI_SUFFIX}")
        sitk.WriteImage(checked.labels, str(stage / "labelsTr" / f"{case.name}{NIFTI_SUFFIX}"), useCompression=True)
    if data.test:
        (stage / "imagesTs").mkdir()
        for checked in progress(_checked(data.test), len(data.test), "check+copy test"):
            shutil.copyfile(checked.case.image, stage / "imagesTs" / checked.case.image.name)

    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    generate_dataset_json(
        str(stage),
        channel_names={0: "CT"},
        labels=NNUNET_LABELS,
        num_training_cases=len(data.labelled),
        file_ending=NIFTI_SUFFIX,
        regions_class_order=REGIONS_CLASS_ORDER,
        dataset_name=name,
        description="Pancreas (label 1) and lesion (label 2) as regions; lesion subtype in subtypes.json",
        license="see the source data",
        converted_by="nnunet-mtl prepare",
        source=str(data.root),
    )
    subtypes = {c.name: c.subtype for c in data.labelled}
    (stage / SUBTYPES_FILE).write_text(json.dumps(subtypes, indent=2, sort_keys=True) + "\n")
    (stage / SPLITS_FILE).write_text(json.dumps(original_split(data), indent=2) + "\n")


def prepare_dataset(
    data_dir: Path, dataset_id: int, name: str = DEFAULT_NAME, progress: Callable | None = None
) -> PreparedDataset:
    """Write the raw dataset into ``$nnUNet_raw`` (nnU-Net's folders as :func:`ensure_nnunet_env` sets them)."""
    if not 1 <= dataset_id <= 999:
        raise InputError(None, f"--dataset-id must be in 1..999, got {dataset_id}")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise InputError(None, f"--name may hold letters, digits, '-' and '_' only, got {name!r}")
    folders = ensure_nnunet_env(announce=False)
    folder_name = dataset_folder_name(dataset_id, name)
    for other in datasets_with_id(dataset_id):
        if other != folder_name:
            roots = (folders.raw, folders.preprocessed, folders.results)
            where = next(root / other for root in roots if (root / other).is_dir())
            raise InputError(where, f"dataset id {dataset_id} is already used by another dataset")
    check_writable_dir(folders.raw)
    data = scan_assignment_data(Path(data_dir))
    final = folders.raw / folder_name
    with staged_directory(final) as stage:
        _write_dataset(stage, data, name, progress or (lambda items, total, desc: items))
    sync_preprocessed_split(folders.preprocessed / folder_name, final / SPLITS_FILE)
    return PreparedDataset(final, len(data.labelled), len(data.test))


def sync_preprocessed_split(preprocessed: Path, splits_file: Path) -> None:
    """Keep an existing preprocessed folder's split equal to the new one (nnU-Net refuses a mismatch)."""
    target = preprocessed / SPLITS_FILE
    if preprocessed.is_dir() and (not target.exists() or target.read_text() != splits_file.read_text()):
        write_text_atomic(target, splits_file.read_text())
