"""Real CT through ``predict``: NIfTI int16 and int32 at 3 mm and a DICOM series (../shared/data/real-ct/).

The tiny test model's target spacing is the phantom's (about 0.75 x 0.75 x 2.2 mm), so a whole 3 mm scan
would be resampled to a grid far too big for a CPU test: the inputs are small regions of the real scans
kept in tests/fixtures/real_ct/ (Apache-2.0, from TotalSegmentator's test files; tests/fixtures/README.md), so that
CI runs them without the shared data folder.
Accuracy is not the point (the scans have no lesion labels); every mask must keep its input's geometry.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mtl.cli import main
from nnunet_mtl.inference.cases import find_input_cases, read_image
from nnunet_mtl.io import Geometry
from tests.dicom_series import REAL_CT, read_series, write_series

REAL_SERIES = REAL_CT / "example_ct_dicom"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "real_ct"
needs_real_ct = pytest.mark.skipif(not REAL_CT.is_dir(), reason=f"no real CT data in {REAL_CT}")


@pytest.fixture(scope="module")
def model_dir(smoke_model) -> Path:
    return smoke_model[0]


@pytest.fixture(scope="module")
def real_inputs(tmp_path_factory) -> Path:
    """Crops of the three real scans (tests/fixtures/real_ct/, made by make_fixtures below): two NIfTI
    images and a DICOM series sub-folder. Copied, so that the fixtures stay clean."""
    folder = tmp_path_factory.mktemp("real") / "inputs"
    shutil.copytree(FIXTURES, folder)
    return folder


def make_fixtures(out: Path = FIXTURES) -> None:
    """How tests/fixtures/real_ct/ was made: small regions around the pancreas (TotalSegmentator's masks)
    of the real scans, cut with SimpleITK slicing (which moves the origin with the cut), each written in
    its own pixel type, the DICOM one as a series."""
    small = sitk.ReadImage(str(REAL_CT / "example_ct_sm.nii.gz"))
    large = sitk.ReadImage(str(REAL_CT / "example_ct.nii.gz"))
    assert (small.GetPixelID(), large.GetPixelID()) == (sitk.sitkInt16, sitk.sitkInt32)
    sitk.WriteImage(small[40:52, 52:62, 8:14], str(out / "ct_int16_0000.nii.gz"))
    sitk.WriteImage(large[40:53, 50:59, 85:92], str(out / "ct_int32_0000.nii.gz"))
    write_series(read_series(REAL_SERIES)[280:312, 250:280, 0:6], out / "ct_dicom")


def _geometry_kept(mask: Path, source: sitk.Image) -> None:
    written = sitk.ReadImage(str(mask))
    assert written.GetSize() == source.GetSize(), mask.name
    assert Geometry.of(written).mismatch(Geometry.of(source)) is None, mask.name
    assert set(np.unique(sitk.GetArrayFromImage(written)).tolist()) <= {0, 1, 2}, mask.name


def test_predict_keeps_the_geometry_of_real_nifti_and_dicom_inputs(model_dir, real_inputs, tmp_path):
    out = tmp_path / "pred"
    assert main(["predict", "--model-dir", str(model_dir), "-i", str(real_inputs), "-o", str(out)]) == 0
    sources = {
        "ct_int16": sitk.ReadImage(str(real_inputs / "ct_int16_0000.nii.gz")),
        "ct_int32": sitk.ReadImage(str(real_inputs / "ct_int32_0000.nii.gz")),
        "ct_dicom": read_series(real_inputs / "ct_dicom"),
    }
    assert sources["ct_int32"].GetPixelID() == sitk.sitkInt32  # written in the scan's own type
    for name, source in sources.items():
        _geometry_kept(out / f"{name}.nii.gz", source)
    with (out / "subtype_results.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Names", "Subtype"]
    assert sorted(row[0] for row in rows[1:]) == [f"{name}.nii.gz" for name in sorted(sources)]
    assert all(row[1] in {"0", "1", "2"} for row in rows[1:])


def test_input_folder_may_be_the_dicom_series_itself(model_dir, real_inputs, tmp_path):
    series = real_inputs / "ct_dicom"
    out = tmp_path / "pred"
    assert main(["predict", "--model-dir", str(model_dir), "-i", str(series), "-o", str(out)]) == 0
    _geometry_kept(out / "ct_dicom.nii.gz", read_series(series))
    rows = (out / "subtype_results.csv").read_text().splitlines()[1:]
    assert len(rows) == 1 and rows[0] in {f"ct_dicom.nii.gz,{k}" for k in range(3)}


@needs_real_ct
def test_the_real_series_folder_is_found_and_read_in_its_geometry():
    """All 20 slices of the real series, in the grid of TotalSegmentator's mask for it (a separate file whose
    y axis runs the other way: the same voxels in physical space)."""
    cases = find_input_cases(REAL_SERIES)
    assert [(c.name, c.image) for c in cases] == [("example_ct_dicom", REAL_SERIES)]
    data, properties = read_image(REAL_SERIES)
    assert data.shape == (1, 20, 512, 512)
    geometry = properties["sitk_stuff"]
    assert geometry["spacing"] == pytest.approx((0.9765625, 0.9765625, 2.0))
    segmentation = sitk.ReadImage(str(REAL_CT / "example_seg_dicom.nii.gz"))
    grid = sitk.Image(512, 512, 20, sitk.sitkUInt8)
    grid.SetSpacing(geometry["spacing"])
    grid.SetOrigin(geometry["origin"])
    grid.SetDirection(geometry["direction"])
    for index in ((0, 0, 0), (511, 511, 19), (100, 37, 5)):
        flipped = (index[0], 511 - index[1], index[2])
        assert np.allclose(
            grid.TransformIndexToPhysicalPoint(index), segmentation.TransformIndexToPhysicalPoint(flipped), atol=1e-3
        )


@needs_real_ct
def test_fixtures_are_crops_of_the_real_scans(tmp_path):
    make_fixtures(tmp_path)
    for name in ("ct_int16_0000.nii.gz", "ct_int32_0000.nii.gz"):
        fresh, kept = sitk.ReadImage(str(tmp_path / name)), sitk.ReadImage(str(FIXTURES / name))
        assert fresh.GetPixelID() == kept.GetPixelID()
        assert Geometry.of(fresh).mismatch(Geometry.of(kept)) is None
        assert np.array_equal(sitk.GetArrayFromImage(fresh), sitk.GetArrayFromImage(kept))
    fresh, kept = read_series(tmp_path / "ct_dicom"), read_series(FIXTURES / "ct_dicom")
    assert Geometry.of(fresh).mismatch(Geometry.of(kept)) is None
    assert np.array_equal(sitk.GetArrayFromImage(fresh), sitk.GetArrayFromImage(kept))
