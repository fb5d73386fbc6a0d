"""Image reading with clear errors, geometry comparison, and atomic writes."""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_mtl.errors import InputError

NIFTI_SUFFIX = ".nii.gz"
GZIP_MAGIC = b"\x1f\x8b"
# Geometry tolerances: NIfTI stores spacing/origin as float32, so exact equality is too strict.
SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


@dataclass(frozen=True)
class Geometry:
    """Voxel grid in SimpleITK order: size, spacing and origin are (x, y, z)."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    def mismatch(self, other: Geometry) -> str | None:
        """A short description of the first difference to ``other``, or None if they agree."""
        if self.size != other.size:
            return f"shape {self.size} differs from {other.size}"
        if not np.allclose(self.spacing, other.spacing, rtol=SPACING_RTOL, atol=0):
            return f"spacing {_fmt(self.spacing)} differs from {_fmt(other.spacing)}"
        if not np.allclose(self.origin, other.origin, rtol=0, atol=ORIGIN_ATOL_MM):
            return f"origin {_fmt(self.origin)} differs from {_fmt(other.origin)}"
        if not np.allclose(self.direction, other.direction, rtol=0, atol=DIRECTION_ATOL):
            return f"direction {_fmt(self.direction)} differs from {_fmt(other.direction)}"
        return None


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def read_volume(path: Path) -> sitk.Image:
    """Read a single-channel 3D NIfTI volume, or raise an InputError that says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    if path.name.endswith(".gz"):
        _check_gzip(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(path, "not a readable NIfTI image") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"has {image.GetNumberOfComponentsPerPixel()} channels per voxel; expected 1")
    if image.GetDimension() != 3:
        raise InputError(path, f"is {image.GetDimension()}D; expected a 3D volume")
    return image


def _check_gzip(path: Path) -> None:
    with path.open("rb") as handle:
        if handle.read(2) != GZIP_MAGIC:
            raise InputError(path, "not gzip-compressed although named .gz (not a .nii.gz file)")
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 22):
                pass
    except (OSError, EOFError, zlib.error):
        raise InputError(path, "corrupt or truncated gzip data") from None


def array_of(image: sitk.Image) -> np.ndarray:
    """Voxel array in (z, y, x) order (a copy; SimpleITK views die with their image)."""
    return sitk.GetArrayFromImage(image)


def check_finite(image: sitk.Image, path: Path) -> None:
    """Refuse NaN/inf intensities in a float image.

    ITK's NIfTI reader silently turns NaN into 0, so the check reads the stored values with nibabel.
    """
    if not np.issubdtype(sitk.GetArrayViewFromImage(image).dtype, np.floating):
        return
    import nibabel

    if not np.isfinite(np.asanyarray(nibabel.load(path).dataobj)).all():
        raise InputError(path, "contains NaN or infinite intensities")


# ---------------------------------------------------------------- atomic output


def _temp_sibling(path: Path) -> Path:
    # Keep the real suffix: SimpleITK picks the file format from the extension.
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix="-" + path.name, dir=path.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_image_atomic(image: sitk.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


@contextlib.contextmanager
def staged_directory(final: Path) -> Iterator[Path]:
    """Build a directory under a temporary name; it replaces ``final`` only if the block succeeds.

    An older ``final`` is removed only after the new one is complete, so an error (or a kill) never
    leaves a half-built ``final`` behind.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield stage
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, old / final.name)
        os.replace(stage, final)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if stage.exists():
            shutil.rmtree(stage)


def check_writable_dir(path: Path) -> None:
    """Create ``path`` if needed and check that files can be created in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise InputError(path, f"output folder cannot be written ({err.strerror or err})") from None
