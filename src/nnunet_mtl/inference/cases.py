"""Input cases of ``nnunet-mtl predict``: discovery, validated reading, and writing masks back.

Images are read with SimpleITK after the same checks as ``prepare`` (readable, 3D, one channel, finite)
and handed to nnU-Net's preprocessing with the properties nnU-Net's ``SimpleITKIO`` would produce, so
the export restores exactly the input's geometry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_mtl.data.layout import SUBTYPE_FOLDERS, Case, scan_labelled_split, scan_test_split
from nnunet_mtl.errors import InputError
from nnunet_mtl.io import NIFTI_SUFFIX, array_of, check_finite, read_volume, write_image_atomic


def find_input_cases(in_dir: Path) -> list[Case]:
    """Images of a flat folder (``<case>_0000.nii.gz``, like ``test/``), or of a split folder with
    ``subtypeK/`` folders (like ``validation/``; its masks are ignored)."""
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise InputError(in_dir, "input folder not found")
    if any((in_dir / name).is_dir() for name in SUBTYPE_FOLDERS):
        return scan_labelled_split(in_dir)
    return scan_test_split(in_dir)


def mask_file_name(case_name: str) -> str:
    return f"{case_name}{NIFTI_SUFFIX}"


def read_image(path: Path) -> tuple[np.ndarray, dict]:
    """(1, z, y, x) float32 voxels and nnU-Net's ``SimpleITKIO`` properties of a checked 3D image."""
    image = read_volume(path)
    check_finite(image, path)
    spacing = image.GetSpacing()
    properties = {
        "sitk_stuff": {"spacing": spacing, "origin": image.GetOrigin(), "direction": image.GetDirection()},
        "spacing": [abs(s) for s in spacing[::-1]],
    }
    return array_of(image)[None].astype(np.float32, copy=False), properties


def write_mask(segmentation: np.ndarray, properties: dict, path: Path) -> None:
    """Write a (z, y, x) label map with the input's geometry, atomically."""
    image = sitk.GetImageFromArray(segmentation.astype(np.uint8, copy=False))
    geometry = properties["sitk_stuff"]
    image.SetSpacing(geometry["spacing"])
    image.SetOrigin(geometry["origin"])
    image.SetDirection(geometry["direction"])
    write_image_atomic(image, path)
