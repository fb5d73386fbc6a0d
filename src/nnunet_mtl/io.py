"""Image reading with clear errors, geometry comparison, and atomic writes."""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_mtl.errors import InputError, OutputError

NIFTI_SUFFIX = ".nii.gz"


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Temporary files and folders are created private (0600/0700); what we rename into place gets the
# usual permissions. Read once: probing os.umask later would race with the export thread.
_UMASK = _process_umask()
FILE_MODE, DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK
GZIP_MAGIC = b"\x1f\x8b"
# Geometry tolerances: NIfTI stores spacing/origin as float32, so exact equality is too strict.
SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
LOW_SPACE_BYTES = 64 * 2**20  # below this, an incomplete image file is put down to a full disk


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
    """Read a single-channel 3D NIfTI volume with finite intensities, or raise an InputError that says what
    is wrong.

    The file is read and decompressed once. Its bytes are checked first: the gzip stream whole (ITK reads a
    truncated one without complaint), the NIfTI header (ITK prints its complaint about a file that is not
    NIfTI to stderr), the stored intensities (ITK's reader turns NaN and infinity into 0). SimpleITK then
    reads those same bytes, uncompressed, from a temporary file, so the image and its geometry are exactly
    what nnU-Net's ``SimpleITKIO`` reads from ``path``.
    """
    path = _check_file(path)
    raw = _decompressed(path)
    nifti = _parse_nifti(raw, path)
    with tempfile.NamedTemporaryFile(prefix="nnunet-mtl-", suffix=".nii") as uncompressed:
        uncompressed.write(raw)
        uncompressed.flush()
        try:
            image = _nifti_reader(Path(uncompressed.name)).Execute()
        except RuntimeError:
            raise InputError(path, "not a readable NIfTI image") from None
    _check_3d_single_channel(path, image.GetDimension(), image.GetNumberOfComponentsPerPixel())
    if np.issubdtype(nifti.get_data_dtype(), np.floating) and not np.isfinite(np.asanyarray(nifti.dataobj)).all():
        raise InputError(path, "contains NaN or infinite values")
    return image


def _decompressed(path: Path) -> bytes:
    stored = path.read_bytes()
    if not path.name.endswith(".gz"):
        return stored
    try:
        return gzip.decompress(stored)
    except (OSError, EOFError, zlib.error):  # gzip.BadGzipFile is an OSError
        raise InputError(path, "corrupt or truncated gzip data") from None


def _parse_nifti(raw: bytes, path: Path):
    """The NIfTI-1 or NIfTI-2 image of a file's uncompressed bytes (header and a lazy view of the data)."""
    import nibabel

    for kind in (nibabel.Nifti1Image, nibabel.Nifti2Image):
        try:
            return kind.from_bytes(raw)
        except Exception:  # nibabel raises several kinds for bytes that are not this format
            continue
    raise InputError(path, "not a readable NIfTI image")


def check_volume_header(path: Path) -> None:
    """The cheap part of :func:`read_volume`: the file exists and its NIfTI header describes a single-channel
    3D volume. Damage inside the voxel data (a truncated gzip, NaN) shows only when the volume is read."""
    path = _check_file(path)
    _check_nifti_header(path)
    reader = _nifti_reader(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(path, "not a readable NIfTI image") from None
    _check_3d_single_channel(path, reader.GetDimension(), reader.GetNumberOfComponents())


def _check_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    try:
        with path.open("rb") as handle:
            magic = handle.read(2)
    except OSError as err:
        raise InputError(path, f"cannot be read ({(err.strerror or str(err)).lower()})") from None
    if path.name.endswith(".gz") and magic != GZIP_MAGIC:
        raise InputError(path, "not gzip-compressed although named .gz (not a .nii.gz file)")
    return path


def _check_nifti_header(path: Path) -> None:
    """Refuse a file without a NIfTI header before ITK reads it: ITK's NIfTI library prints its complaint
    to stderr, which would add a line to the one-line error."""
    import nibabel

    try:
        image = nibabel.load(path)
    except (EOFError, zlib.error, gzip.BadGzipFile):
        raise InputError(path, "corrupt or truncated gzip data") from None
    except Exception:  # nibabel raises several kinds for a file that is not NIfTI
        raise InputError(path, "not a readable NIfTI image") from None
    if not isinstance(image, (nibabel.Nifti1Image, nibabel.Nifti2Image)):
        raise InputError(path, f"not a NIfTI image ({type(image).__name__})")


def _nifti_reader(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetImageIO("NiftiImageIO")  # a file named .nii.gz is NIfTI, not whatever else ITK could read
    reader.SetFileName(str(path))
    return reader


def _check_3d_single_channel(path: Path, dimension: int, channels: int) -> None:
    if channels != 1:
        raise InputError(path, f"has {channels} channels per voxel; expected 1")
    if dimension != 3:
        raise InputError(path, f"is {dimension}D; expected a 3D volume")


def array_of(image: sitk.Image) -> np.ndarray:
    """Voxel array in (z, y, x) order (a copy; SimpleITK views die with their image)."""
    return sitk.GetArrayFromImage(image)


# ---------------------------------------------------------------- atomic output


def _temp_sibling(path: Path) -> Path:
    # Keep the real suffix: SimpleITK picks the file format from the extension.
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix="-" + path.name, dir=path.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def _parent_folders(path: Path) -> Iterator[None]:
    """Create the folders above ``path``; those created here are removed again if the block fails."""
    created = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename. A full disk
    is an :class:`OutputError` naming ``path``, which is left as it was (no temporary file either)."""
    path = Path(path)
    try:
        with _parent_folders(path):
            tmp = _temp_sibling(path)
            try:
                yield tmp
                os.chmod(tmp, FILE_MODE)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
    except OSError as err:
        if err.errno in DISK_FULL:
            raise disk_full(path) from err
        raise


def disk_full(path: Path) -> OutputError:
    return OutputError(path, "cannot be written: no space left on device (free space and run again)")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed run left in ``folder`` (not recursive)."""
    removed = [p for p in Path(folder).glob(".tmp-*") if p.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: Path, values) -> None:
    """``values`` as indented JSON, written atomically."""
    write_text_atomic(path, json.dumps(values, indent=2) + "\n")


def write_image_atomic(image: sitk.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
        if tmp.name.endswith(".gz") and not _gzip_complete(tmp):  # ITK truncates silently on a full disk
            if shutil.disk_usage(tmp.parent).free < LOW_SPACE_BYTES:
                raise disk_full(path)
            raise OutputError(path, "written incompletely by SimpleITK")


def _gzip_complete(path: Path, chunk: int = 2**20) -> bool:
    """Whether a gzip file holds a whole stream (its end and CRC), in constant memory."""
    stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        with open(path, "rb") as handle:
            while data := handle.read(chunk):
                while data and not stream.eof:
                    stream.decompress(data, chunk)
                    data = stream.unconsumed_tail
    except zlib.error:
        return False
    return stream.eof


@contextlib.contextmanager
def staged_directory(final: Path) -> Iterator[Path]:
    """Build a directory under a temporary name; it replaces ``final`` only if the block succeeds.

    An older ``final`` is removed only after the new one is complete, so an error (or a kill) never
    leaves a half-built ``final`` behind.
    """
    final = Path(final)
    with _parent_folders(final):
        stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            yield stage
            old = None
            if final.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
                os.replace(final, old / final.name)
            os.chmod(stage, DIR_MODE)
            os.replace(stage, final)
            if old is not None:
                shutil.rmtree(old)
        finally:
            if stage.exists():
                shutil.rmtree(stage)


def check_staged_output_dir(path: Path) -> None:
    """:func:`check_writable_dir` for an output folder that :func:`staged_directory` builds: it is built
    next to ``path`` and renamed into place, so the folder above must accept it too."""
    check_writable_dir(path)
    check_writable_dir(Path(path).parent)


def check_writable_dir(path: Path) -> None:
    """Refuse an output folder that cannot be created or written, before anything is computed.

    Creates nothing: the nearest existing folder on the way must be a folder that accepts a new file
    (checked with ``os.access`` and a probe file, which also catches read-only file systems).
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        if existing == path:
            raise InputError(path, "output folder is an existing file, not a folder")
        raise InputError(path, f"output folder cannot be created: {existing} is a file, not a folder")
    problem = None
    if not os.access(existing, os.W_OK | os.X_OK):
        problem = "permission denied"
    else:
        try:
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test-"):
                pass
        except OSError as err:
            problem = (err.strerror or str(err)).lower()
    if problem:
        where = "" if existing == path else f" (in {existing})"
        raise InputError(path, f"output folder cannot be written{where}: {problem}")
