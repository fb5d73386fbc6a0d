import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mtl.errors import InputError
from nnunet_mtl.io import (
    Geometry,
    atomic_path,
    check_writable_dir,
    read_volume,
    staged_directory,
    write_image_atomic,
)


def _image(shape=(4, 5, 6), spacing=(0.8, 0.8, 2.0), origin=(1.0, 2.0, 3.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.zeros(shape, np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def test_geometry_mismatch_names_the_difference():
    base = Geometry.of(_image())
    assert base.mismatch(Geometry.of(_image())) is None
    assert "shape" in base.mismatch(Geometry.of(_image(shape=(4, 5, 7))))
    assert "spacing" in base.mismatch(Geometry.of(_image(spacing=(0.8, 0.8, 2.5))))
    assert "origin" in base.mismatch(Geometry.of(_image(origin=(1.0, 2.0, 4.0))))
    flipped = _image()
    flipped.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert "direction" in base.mismatch(Geometry.of(flipped))
    # float32 round-off in the NIfTI header is not a mismatch
    assert base.mismatch(Geometry.of(_image(spacing=(0.8 + 1e-7, 0.8, 2.0)))) is None


def test_write_image_atomic_round_trips_geometry(tmp_path):
    image = _image()
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    write_image_atomic(image, tmp_path / "x.nii.gz")
    assert Geometry.of(read_volume(tmp_path / "x.nii.gz")).mismatch(Geometry.of(image)) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nii.gz"]


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    (tmp_path / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "keep.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    assert (tmp_path / "keep.txt").read_text() == "old"


def test_staged_directory_replaces_whole_or_not_at_all(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_directory(final) as stage:
        (stage / "new.txt").write_text("new")
        raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in final.iterdir()] == ["old.txt"]
    with staged_directory(final) as stage:
        (stage / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in final.iterdir()] == ["new.txt"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (b"this is not an image", "not gzip-compressed"),
        (None, "corrupt or truncated"),
    ],
)
def test_read_volume_explains_unreadable_files(tmp_path, content, problem):
    path = tmp_path / "bad.nii.gz"
    if content is None:
        write_image_atomic(_image(), path)
        content = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(content)
    with pytest.raises(InputError, match=problem) as info:
        read_volume(path)
    assert info.value.path == path


def test_read_volume_refuses_2d_and_4d(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6), np.int16)), str(tmp_path / "a.nii.gz"))
    with pytest.raises(InputError, match="2D"):
        read_volume(tmp_path / "a.nii.gz")
    sitk.WriteImage(sitk.JoinSeries([_image(), _image()]), str(tmp_path / "b.nii.gz"))
    with pytest.raises(InputError, match="4D"):
        read_volume(tmp_path / "b.nii.gz")


def test_read_volume_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_volume(Path(tmp_path / "nope.nii.gz"))


def test_atomic_writes_get_the_usual_permissions_not_the_temp_files(tmp_path):
    from nnunet_mtl.io import staged_directory, write_text_atomic

    umask = os.umask(0o022)
    os.umask(umask)
    write_text_atomic(tmp_path / "a.txt", "x")
    with staged_directory(tmp_path / "folder") as stage:
        write_text_atomic(stage / "b.txt", "y")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "folder" / "b.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_writes_remove_the_folders_they_created(tmp_path):
    with pytest.raises(RuntimeError), staged_directory(tmp_path / "a" / "b" / "out"):
        raise RuntimeError
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "c" / "d" / "x.txt"):
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_check_writable_dir_creates_nothing(tmp_path):
    check_writable_dir(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_writable_dir(tmp_path / "file" / "out")
    with pytest.raises(InputError, match="existing file"):
        check_writable_dir(tmp_path / "file")


def test_input_error_survives_pickling():
    error = pickle.loads(pickle.dumps(InputError(Path("/data/x.nii.gz"), "empty file")))
    assert (error.path, error.problem, str(error)) == (
        Path("/data/x.nii.gz"),
        "empty file",
        "/data/x.nii.gz: empty file",
    )


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_read_volume_decompresses_once_and_reads_what_simpleitk_reads(tmp_path, monkeypatch, dtype):
    """One read for every check (gzip stream, NIfTI header, NaN); the image is SimpleITK's own of the file."""
    import gzip

    import nibabel

    import nnunet_mtl.io as io_module

    values = np.random.default_rng(0).normal(40, 300, (7, 9, 11))
    image = sitk.GetImageFromArray(values.astype(dtype))
    image.SetSpacing((0.74, 0.81, 2.5))
    image.SetOrigin((-120.0, 35.5, 410.0))
    image.SetDirection((-1, 0, 0, 0, 0, 1, 0, -1, 0))  # flipped and permuted axes
    path = tmp_path / "case_0000.nii.gz"
    sitk.WriteImage(image, str(path), useCompression=True)

    decompressions, itk_files = [], []
    decompress, reader = gzip.decompress, io_module._nifti_reader
    monkeypatch.setattr(io_module.gzip, "decompress", lambda data: decompressions.append(1) or decompress(data))
    monkeypatch.setattr(io_module, "_nifti_reader", lambda p: itk_files.append(p) or reader(p))
    monkeypatch.setattr(nibabel, "load", lambda *a, **k: pytest.fail("a second read of the file"))
    read = read_volume(path)

    assert len(decompressions) == 1 and len(itk_files) == 1 and itk_files[0].suffix == ".nii"
    assert not itk_files[0].exists()  # the uncompressed copy is gone
    expected = sitk.ReadImage(str(path))
    assert read.GetPixelID() == expected.GetPixelID()
    assert np.array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(expected))
    assert Geometry.of(read) == Geometry.of(expected)


_FULL_DISK_WRITE = """
import sys
from pathlib import Path
import numpy as np, SimpleITK as sitk
from nnunet_mtl.errors import OutputError
from nnunet_mtl.io import write_image_atomic
folder = Path(sys.argv[1])
noise = np.random.default_rng(0).integers(0, 255, (64, 128, 128), dtype=np.uint8)  # incompressible: 1 MiB
try:
    write_image_atomic(sitk.GetImageFromArray(noise), folder / "mask.nii.gz")
except OutputError as err:
    print("refused:", err)
print("left:", sorted(p.name for p in folder.iterdir()))
"""


def test_a_really_full_disk_is_caught_although_simpleitk_says_nothing(tmp_path):
    """A 256 KiB tmpfs in a user namespace (skipped where unprivileged namespaces are not allowed): SimpleITK
    writes a truncated .nii.gz there and reports success."""
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    small = tmp_path / "small"
    small.mkdir()
    script = f"mount -t tmpfs -o size=256k tmpfs {small} && {sys.executable} -c '{_FULL_DISK_WRITE}' {small}"
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    if result.returncode != 0 and ("unshare:" in result.stderr or "mount:" in result.stderr):
        pytest.skip(f"no user-namespace tmpfs here: {result.stderr.strip()[:200]}")
    assert result.returncode == 0, result.stderr
    assert f"refused: {small / 'mask.nii.gz'}: cannot be written: no space left on device" in result.stdout
    assert "left: []" in result.stdout
