"""Small DICOM series for tests, written slice by slice with SimpleITK (GDCM)."""

from __future__ import annotations

import contextlib
import locale
from collections.abc import Iterator
from pathlib import Path

import SimpleITK as sitk

REAL_CT = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-ct"
UID_ROOT = "1.2.826.0.1.3680043.8.498"  # an example root, as in SimpleITK's DICOM writing example


def read_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def write_series(image: sitk.Image, folder: Path, series: int = 1) -> Path:
    """Write a 3D int16 image as a CT series (one file per slice) keeping its spacing, origin and direction."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    d = image.GetDirection()
    common = {
        "0008|0060": "CT",
        "0008|0008": "DERIVED\\SECONDARY",
        "0020|000d": f"{UID_ROOT}.1",
        "0020|000e": f"{UID_ROOT}.1.{series}",
        "0020|0037": "\\".join(f"{v:.10g}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
        "0018|0050": f"{image.GetSpacing()[2]:.10g}",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    with _kept_locale():  # GDCM's writer sets the C locale, which would change how subprocess output decodes
        for z in range(image.GetDepth()):
            _write_slice(writer, image, z, common, folder / f"slice_{series}_{z:03d}.dcm")
    return folder


@contextlib.contextmanager
def _kept_locale() -> Iterator[None]:
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_slice(writer: sitk.ImageFileWriter, image: sitk.Image, z: int, common: dict, path: Path) -> None:
    slice_ = image[:, :, z]
    for tag, value in common.items():
        slice_.SetMetaData(tag, value)
    slice_.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in image.TransformIndexToPhysicalPoint((0, 0, z))))
    slice_.SetMetaData("0020|0013", str(z + 1))
    slice_.SetMetaData("0008|0018", f"{common['0020|000e']}.{z + 1}")
    writer.SetFileName(str(path))
    writer.Execute(slice_)
