"""Input cases of ``nnunet-mtl predict``: discovery, validated reading, and writing masks back.

An input folder is a flat folder of ``<case>_0000.nii.gz`` images and DICOM series sub-folders (case
``<folder name>``), a split folder with ``subtypeK/`` folders, or one DICOM series folder itself.
Discovery checks every NIfTI header and DICOM series before anything is predicted. Images are read with
SimpleITK after the same checks as ``prepare`` (readable, 3D, one channel, finite) and handed to nnU-Net's
preprocessing with the properties nnU-Net's ``SimpleITKIO`` would produce, so the export restores exactly
the input's geometry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_mtl.data.layout import SUBTYPE_FOLDERS, Case, flat_image_case, scan_labelled_split
from nnunet_mtl.errors import InputError
from nnunet_mtl.inference.dicom import read_dicom_series, series_files, series_ids
from nnunet_mtl.io import (
    NIFTI_SUFFIX,
    array_of,
    check_volume_header,
    check_writable_dir,
    read_volume,
    write_image_atomic,
)


def find_input_cases(in_dir: Path) -> list[Case]:
    """The cases of an input folder, each checked as far as it can be without reading its voxels."""
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise InputError(in_dir, "input folder not found")
    if any((in_dir / name).is_dir() for name in SUBTYPE_FOLDERS):
        cases = scan_labelled_split(in_dir)
    elif _is_series_folder(in_dir):
        cases = [Case(in_dir.resolve().name, in_dir)]
    else:
        cases = _scan_flat_folder(in_dir)
    for case in cases:
        if case.image.is_dir():
            series_files(case.image)
        else:
            check_volume_header(case.image)
    return cases


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _is_series_folder(folder: Path) -> bool:
    entries = _visible(folder)
    return bool(entries) and all(p.is_file() and ".nii" not in p.name for p in entries) and bool(series_ids(folder))


def _scan_flat_folder(in_dir: Path) -> list[Case]:
    cases: dict[str, Case] = {}
    for path in _visible(in_dir):
        if path.is_dir():
            if not series_ids(path):
                raise InputError(path, "unexpected folder (neither subtype0/1/2 nor a DICOM series folder)")
            case = Case(path.name, path)
        elif not path.name.endswith(NIFTI_SUFFIX):
            raise InputError(
                path, f"unexpected file (expected <case>_0000{NIFTI_SUFFIX} images and DICOM series folders)"
            )
        else:
            case = flat_image_case(path)
        if case.name in cases:
            other = cases[case.name].image
            raise InputError(path, f"case {case.name} given twice (also as {other.name}{'/' * other.is_dir()})")
        cases[case.name] = case
    if not cases:
        raise InputError(in_dir, f"no images found (expected <case>_0000{NIFTI_SUFFIX} files or DICOM series folders)")
    return list(cases.values())


def check_output_folder(in_dir: Path, out_dir: Path) -> None:
    """The output folder must be writable and lie outside the input folder (masks would join the inputs)."""
    if Path(out_dir).resolve().is_relative_to(Path(in_dir).resolve()):
        raise InputError(out_dir, f"output folder lies inside the input folder {in_dir}; choose another")
    check_writable_dir(out_dir)


def mask_file_name(case_name: str) -> str:
    return f"{case_name}{NIFTI_SUFFIX}"


def read_image(path: Path) -> tuple[np.ndarray, dict]:
    """(1, z, y, x) float32 voxels and nnU-Net's ``SimpleITKIO`` properties of a checked 3D image (a NIfTI
    file, or a DICOM series folder)."""
    path = Path(path)
    if path.is_dir():
        image = read_dicom_series(path)  # read_volume checks a NIfTI file's intensities; a series is checked here
        if not np.isfinite(sitk.GetArrayViewFromImage(image)).all():
            raise InputError(path, "contains NaN or infinite values")
    else:
        image = read_volume(path)
    spacing = image.GetSpacing()
    properties = {
        "sitk_stuff": {"spacing": spacing, "origin": image.GetOrigin(), "direction": image.GetDirection()},
        "spacing": [abs(s) for s in spacing[::-1]],
    }
    return array_of(image)[None].astype(np.float32, copy=False), properties


def segmentation_in_input_geometry(
    logits,
    plans_manager,
    configuration_manager,
    label_manager,
    properties: dict,
    num_threads: int,
    return_probabilities: bool = False,
):
    """The (z, y, x) label map of preprocessed-grid logits in the input's geometry (nnU-Net's own export:
    resampling, cropping undone, transposition); with ``return_probabilities`` also the class (or region)
    probabilities there, as nnU-Net's ``--npz`` stores them."""
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    return convert_predicted_logits_to_segmentation_with_correct_shape(
        logits,
        plans_manager,
        configuration_manager,
        label_manager,
        properties,
        return_probabilities=return_probabilities,
        num_threads_torch=num_threads,
    )


def write_mask(segmentation: np.ndarray, properties: dict, path: Path) -> None:
    """Write a (z, y, x) label map with the input's geometry (nnU-Net's ``sitk_stuff`` properties),
    atomically: the one mask writer of ``predict`` and of the trainer's final validation."""
    image = sitk.GetImageFromArray(segmentation.astype(np.uint8, copy=False))
    geometry = properties["sitk_stuff"]
    image.SetSpacing(geometry["spacing"])
    image.SetOrigin(geometry["origin"])
    image.SetDirection(geometry["direction"])
    write_image_atomic(image, path)
