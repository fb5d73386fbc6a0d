import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mtl.config import EVALUATION, POSTPROCESSING
from nnunet_mtl.errors import InputError
from nnunet_mtl.evaluation.metrics import region_dice
from nnunet_mtl.postprocessing.determine import ValidationCase, determine
from nnunet_mtl.postprocessing.lesion_presence import LesionPrevalence, lesion_prevalence, with_lesion
from nnunet_mtl.postprocessing.lesion_threshold import QUANTA, thresholded_labels
from nnunet_mtl.postprocessing.plan import POSTPROCESSING_FILE, Postprocessing, read_postprocessing

SPACING = (2.0, 0.75, 0.75)  # 1.125 mm3 a voxel: the evaluation's 20 mm3 are 18 voxels


def _faint_lesion_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A gland (whole 0.9) whose lesion probability stays under 0.5 everywhere: a faint blob peaking at 0.3,
    a second, separate blob at 0.2, noise below 0.05, and 0.4 outside the gland (not lesion: no gland there)."""
    rng = np.random.default_rng(seed)
    whole = np.zeros((12, 30, 30))
    whole[2:10, 3:27, 3:27] = 0.9
    lesion = np.where(whole > 0, rng.random(whole.shape) * 0.05, 0.0)
    z, y, x = np.mgrid[:12, :30, :30]
    lesion += 0.3 * np.exp(-((z - 5) ** 2 / 8 + (y - 10) ** 2 / 18 + (x - 10) ** 2 / 18))
    lesion[6:8, 20:23, 20:23] = 0.2
    lesion[0, :4, :4] = 0.4
    return whole, lesion


def _half_maximum_region(lesion: np.ndarray, gland: np.ndarray) -> np.ndarray:
    """Written out with SimpleITK's region growing: from the gland's most likely voxel, the face-connected
    voxels of the gland at or above half its probability."""
    inside = np.where(gland, lesion, -1.0)
    peak = np.unravel_index(np.argmax(inside), inside.shape)
    grown = sitk.ConnectedThreshold(
        sitk.GetImageFromArray(inside), seedList=[tuple(int(i) for i in peak[::-1])], lower=inside.max() / 2, upper=2.0
    )
    return sitk.GetArrayFromImage(grown).astype(bool)


def test_an_absent_lesion_becomes_the_half_maximum_region_around_the_gland_peak():
    whole, lesion = _faint_lesion_case()
    labels = thresholded_labels(np.stack([whole, lesion]), 0.5)
    assert not (labels == 2).any()
    result = with_lesion(labels, lesion, SPACING)
    assert np.array_equal(result > 0, labels > 0)  # the gland is nnU-Net's, unchanged
    expected = _half_maximum_region(lesion, labels > 0)
    assert np.array_equal(result == 2, expected) and 50 < expected.sum() < 300
    assert not result[6:8, 20:23, 20:23].any() or (result[6:8, 20:23, 20:23] == 1).all()  # the other blob: gland
    # on the stored, quantised probabilities the region is the same up to the quantisation at its edge
    quantised = np.rint(lesion * QUANTA).astype(np.uint8)
    overlap = region_dice(with_lesion(labels, quantised, SPACING), result)["lesion"]
    assert overlap > 0.9


def test_a_found_lesion_and_a_case_without_gland_are_left_alone():
    whole, lesion = _faint_lesion_case()
    labels = thresholded_labels(np.stack([whole, lesion]), 0.2)  # the blob's core, found
    assert (labels == 2).sum() * np.prod(SPACING) >= EVALUATION.lesion_min_volume_mm3
    assert with_lesion(labels, lesion, SPACING) is labels
    empty = np.zeros_like(labels)
    assert with_lesion(empty, lesion, SPACING) is empty
    no_probability = thresholded_labels(np.stack([whole, lesion]), 0.5)
    assert with_lesion(no_probability, np.zeros_like(lesion), SPACING) is no_probability


def test_a_lesion_under_the_evaluations_minimum_volume_counts_as_absent():
    whole, lesion = _faint_lesion_case()
    labels = thresholded_labels(np.stack([whole, lesion]), 0.5)
    labels[9, 25, 25] = 2  # a stray voxel far from the peak
    result = with_lesion(labels, lesion, SPACING)
    assert result[9, 25, 25] == 2 and (result == 2).sum() > 1  # kept, and the peak's region added


def _masks(folder, lesion_in: list[bool]) -> None:
    folder.mkdir()
    for k, has_lesion in enumerate(lesion_in):
        labels = np.zeros((10, 20, 20), np.uint8)
        labels[2:8, 4:16, 4:16] = 1
        if has_lesion:
            labels[4:6, 8:12, 8:12] = 2  # 32 voxels of 1.125 mm3
        image = sitk.GetImageFromArray(labels)
        image.SetSpacing(SPACING[::-1])
        sitk.WriteImage(image, str(folder / f"quiz_{k:03d}.nii.gz"))


def test_prevalence_counts_the_labelled_cases_with_a_lesion(tmp_path):
    _masks(tmp_path / "all", [True, True, True])
    _masks(tmp_path / "one_without", [True, False, True])
    assert lesion_prevalence(tmp_path / "all") == LesionPrevalence(3, 3) and LesionPrevalence(3, 3).every_case
    assert lesion_prevalence(tmp_path / "one_without") == LesionPrevalence(3, 2)
    assert not LesionPrevalence(3, 2).every_case and not LesionPrevalence(0, 0).every_case


def _validation_case(name: str) -> ValidationCase:
    whole, lesion = _faint_lesion_case(seed=len(name))
    quantised = np.rint(np.stack([whole, lesion]) * QUANTA).astype(np.uint8)
    prediction = thresholded_labels(quantised, 0.5, QUANTA)
    truth = prediction.copy()
    truth[_half_maximum_region(lesion, prediction > 0)] = 2
    return ValidationCase(name, prediction, truth, 0, [0.6, 0.3, 0.1], quantised, SPACING)


def test_determined_only_where_every_labelled_case_has_a_lesion(tmp_path):
    cases = [_validation_case(f"c{k}") for k in range(3)]
    # nnU-Net's threshold only: a lower one would find these faint lesions itself, and nothing would be left to add
    config = replace(POSTPROCESSING, lesion_thresholds=(0.5,))
    every = determine(cases, "test", config, LesionPrevalence(40, 40))
    assert every.lesion_in_every_case and every.uses_region_probabilities and not every.is_identity
    report = every.determined_on["lesion_in_every_case"]
    assert report["applied"] and sorted(report["changed_cases"]) == ["c0", "c1", "c2"]
    assert all(before == 0.0 and after > 0.9 for before, after in report["changed_cases"].values())
    assert not determine(cases, "test", config, LesionPrevalence(40, 39)).lesion_in_every_case
    assert not determine(cases, "test", config).lesion_in_every_case  # prevalence unknown
    old = [ValidationCase(c.name, c.prediction, c.truth, 0, c.probabilities) for c in cases]  # no probabilities
    assert not determine(old, "test", config, LesionPrevalence(40, 40)).lesion_in_every_case
    switched_off = replace(config, lesion_in_every_case=False)
    assert not determine(cases, "test", switched_off, LesionPrevalence(40, 40)).lesion_in_every_case
    # through the model folder: stored, read back, part of the settings a rerun compares
    (tmp_path / POSTPROCESSING_FILE).write_text(json.dumps(every.to_json()))
    assert read_postprocessing(tmp_path) == every
    assert every.settings()["lesion_in_every_case"] is True
    assert "lesion_in_every_case" not in Postprocessing().settings()  # earlier outputs stay valid
    (tmp_path / POSTPROCESSING_FILE).write_text('{"temperature": 1.0, "mask_steps": [], "lesion_in_every_case": 1}')
    with pytest.raises(InputError, match="lesion_in_every_case 1 is not true or false"):
        read_postprocessing(tmp_path)
    (tmp_path / POSTPROCESSING_FILE).write_text(json.dumps({**every.to_json(), "lesion_fallback_relative": 0}))
    with pytest.raises(InputError, match=r"lesion_fallback_relative 0\.0 outside"):
        read_postprocessing(tmp_path)


def test_a_lower_share_of_the_peak_grows_the_added_region_around_the_same_voxel():
    whole, lesion = _faint_lesion_case()
    regions = np.stack([whole, lesion])
    sizes = []
    for relative in (0.75, 0.5, 0.25):
        labels = Postprocessing(lesion_in_every_case=True, lesion_fallback_relative=relative).labels(regions, SPACING)
        sizes.append(int((labels == 2).sum()))
        assert labels[5, 10, 10] == 2
    assert sizes[0] < sizes[1] < sizes[2]
