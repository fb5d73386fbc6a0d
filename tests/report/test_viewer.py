import base64
import gzip
import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mtl.config import VIEWER, ViewerConfig
from nnunet_mtl.errors import InputError
from nnunet_mtl.report import bundle
from nnunet_mtl.report.sources import CaseFiles
from nnunet_mtl.report.viewer import embedding_priority, encode_case, select_cases

SHAPE = (12, 20, 24)  # z, y, x


def write_volume(array: np.ndarray, path: Path, spacing=(0.8, 0.8, 2.5)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((10.0, -20.0, 30.0))
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def decode(volume: str) -> sitk.Image:
    """An embedded volume as the browser gets it: base64 of a gzip NIfTI."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "volume.nii"
        path.write_bytes(gzip.decompress(base64.b64decode(volume)))
        return sitk.ReadImage(str(path))


@pytest.fixture
def case_files(tmp_path) -> CaseFiles:
    rng = np.random.default_rng(0)
    ct = rng.integers(-1024, 1500, SHAPE).astype(np.int16)
    labels = np.zeros(SHAPE, np.uint8)
    labels[3:9, 5:15, 6:18] = 1
    labels[5:7, 8:11, 9:12] = 2
    truth = np.where(labels == 1, np.float32(1.0000152587890625), labels.astype(np.float32))  # as the real masks
    prediction = np.roll(labels, 1, axis=2)
    return CaseFiles(
        write_volume(prediction, tmp_path / "c.nii.gz"),
        write_volume(truth, tmp_path / "c_truth.nii.gz"),
        write_volume(ct, tmp_path / "c_0000.nii.gz"),
    )


def test_embedded_volumes_keep_geometry_labels_and_hu_within_a_step(case_files):
    encoded = encode_case("c", case_files)
    original = sitk.ReadImage(str(case_files.image))
    low, high = VIEWER.ct_range_hu
    step = (high - low) / 255
    ct = decode(encoded.volumes["ct"])
    assert ct.GetPixelID() == sitk.sitkUInt8
    assert ct.GetSpacing() == pytest.approx(original.GetSpacing())
    assert ct.GetOrigin() == pytest.approx(original.GetOrigin())
    hu = low + sitk.GetArrayFromImage(ct).astype(float) * step  # what the viewer shows
    expected = np.clip(sitk.GetArrayFromImage(original), low, high)
    assert np.abs(hu - expected).max() <= step / 2 + 1e-6
    truth = sitk.GetArrayFromImage(decode(encoded.volumes["truth"]))
    assert truth.dtype == np.uint8 and set(np.unique(truth)) == {0, 1, 2}
    assert (truth == sitk.GetArrayFromImage(sitk.ReadImage(str(case_files.truth))).round()).all()
    prediction = sitk.GetArrayFromImage(decode(encoded.volumes["prediction"]))
    assert (prediction == sitk.GetArrayFromImage(sitk.ReadImage(str(case_files.prediction)))).all()
    assert encoded.shape == SHAPE and encoded.stride == 1


def test_a_case_over_the_voxel_cap_is_subsampled_in_plane(case_files):
    encoded = encode_case("c", case_files, ViewerConfig(max_voxels_per_case=np.prod(SHAPE) // 4))
    assert encoded.stride == 2 and encoded.shape == (12, 10, 12)
    assert decode(encoded.volumes["ct"]).GetSpacing() == pytest.approx((1.6, 1.6, 2.5))


def test_a_mask_of_another_geometry_is_refused_naming_it(case_files, tmp_path):
    wrong = write_volume(np.zeros(SHAPE, np.uint8), tmp_path / "wrong.nii.gz", spacing=(1.0, 1.0, 2.5))
    with pytest.raises(InputError, match=r"wrong\.nii\.gz: mask does not match its image"):
        encode_case("c", CaseFiles(wrong, case_files.truth, case_files.image))


def test_priority_alternates_from_the_worst_and_the_best():
    ranked = [{"name": n} for n in "abcde"]  # best first
    assert [c["name"] for c in embedding_priority(ranked)] == ["e", "a", "d", "b", "c"]
    assert [c["name"] for c in embedding_priority(ranked[:2])] == ["b", "a"]
    assert embedding_priority([]) == []


def test_over_the_budget_the_worst_and_best_stay_and_the_rest_is_named(case_files):
    ranked = [{"name": n} for n in "abcd"]
    files = dict.fromkeys("abcd", case_files) | {"x": CaseFiles(None, None, None)}
    content = select_cases([*ranked, {"name": "x"}], files, ViewerConfig(budget_mb=1e-6))
    assert [case["name"] for case, _ in content.cases] == ["d", "a"]
    assert content.left_out == ["c", "b"] and content.missing == ["x"]
    notes = " ".join(content.notes())
    assert "left out to keep the report within the budget: c, b" in notes and "x" in notes
    everything = select_cases(ranked, files, ViewerConfig(budget_mb=100))
    assert len(everything.cases) == 4 and not everything.left_out


def test_the_vendored_bundle_is_the_pinned_npm_file_and_a_damaged_one_is_refused(monkeypatch):
    data = bundle.niivue_bundle()
    assert hashlib.sha256(data).hexdigest() == bundle.NIIVUE_SHA256 and data.startswith(b"(function(")
    vendor = Path(bundle.__file__).parent / bundle.VENDOR
    assert "BSD 2-Clause License" in (vendor / "LICENSE").read_text()
    monkeypatch.setattr(bundle, "NIIVUE_SHA256", "0" * 64)
    with pytest.raises(InputError, match=r"niivue.umd.js: sha256 .* is not the pinned one of @niivue/niivue@"):
        bundle.niivue_bundle()
