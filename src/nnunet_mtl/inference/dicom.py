"""DICOM series as ``predict`` input, read with SimpleITK (GDCM).

A series is given as a folder that holds its slice files and nothing else (hidden files aside): either a
sub-folder of the input folder (the case is named after it) or the input folder itself. A folder with
several series, a file that is not part of the series, unevenly spaced slices or unreadable pixel data is
refused with an error naming it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_mtl.errors import InputError

POSITION_TAG = "0020|0032"  # Image Position (Patient)
ORIENTATION_TAG = "0020|0037"  # Image Orientation (Patient)
SLICE_SPACING_TOLERANCE = 0.1  # largest deviation of a slice step from the median step, as a fraction of it


@contextlib.contextmanager
def _quiet_itk() -> Iterator[None]:
    """ITK warns on stderr (uneven slices, unknown tags); the problems it warns about are ours to report."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _visible_files(folder: Path) -> list[Path]:
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for entry in entries:
        if entry.is_dir():
            raise InputError(entry, "unexpected folder inside a DICOM series folder")
    return entries


def series_ids(folder: Path) -> tuple[str, ...]:
    with _quiet_itk():
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def series_files(folder: Path) -> list[str]:
    """The slice files of the one DICOM series in ``folder``, in slice order, evenly spaced."""
    folder = Path(folder)
    files = _visible_files(folder)
    if not files:
        raise InputError(folder, "empty folder (expected the files of one DICOM series)")
    ids = series_ids(folder)
    if not ids:
        raise InputError(folder, "no DICOM series in this folder (expected the files of one DICOM series)")
    if len(ids) > 1:
        raise InputError(folder, f"holds {len(ids)} DICOM series; put each series in its own folder")
    with _quiet_itk():
        names = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    in_series = {Path(name).resolve() for name in names}
    for path in files:
        if path.resolve() not in in_series:
            raise InputError(path, f"not a readable slice of the DICOM series in {folder.name}/")
    if len(names) < 2:
        raise InputError(folder, "holds a single slice; expected a 3D series")
    _check_slice_spacing(folder, names)
    return names


def _check_slice_spacing(folder: Path, names: list[str]) -> None:
    """Refuse slices off a regular grid (a missing slice, a doubled one): ITK would stack them evenly."""
    positions = []
    for name in names:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        try:
            with _quiet_itk():
                reader.ReadImageInformation()
            if not (reader.HasMetaDataKey(POSITION_TAG) and reader.HasMetaDataKey(ORIENTATION_TAG)):
                return  # no positions to compare: ITK lays the slices out in their order
            orientation = [float(v) for v in reader.GetMetaData(ORIENTATION_TAG).split("\\")]
            position = [float(v) for v in reader.GetMetaData(POSITION_TAG).split("\\")]
            positions.append(float(np.dot(np.cross(orientation[:3], orientation[3:6]), position[:3])))
        except (RuntimeError, ValueError):
            raise InputError(name, f"not a readable slice of the DICOM series in {folder.name}/") from None
    steps = np.diff(np.sort(positions))
    spacing = float(np.median(steps))
    deviation = float(np.abs(steps - spacing).max())
    if spacing <= 0 or deviation > SLICE_SPACING_TOLERANCE * spacing:
        raise InputError(
            folder,
            f"slices are not evenly spaced (missing or doubled slices?): steps of {steps.min():.3g} to "
            f"{steps.max():.3g} mm",
        )


def read_dicom_series(folder: Path) -> sitk.Image:
    """The series in ``folder`` as one single-channel 3D image, with the series' spacing, origin, direction."""
    folder = Path(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series_files(folder))
    try:
        with _quiet_itk():
            image = reader.Execute()
    except RuntimeError:
        raise InputError(folder, "not a readable DICOM series (damaged or inconsistent slices)") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(folder, f"has {image.GetNumberOfComponentsPerPixel()} channels per voxel; expected 1")
    if image.GetDimension() != 3:
        raise InputError(folder, f"is {image.GetDimension()}D; expected a 3D volume")
    return image
