import json

import numpy as np
import pytest

from nnunet_mtl.errors import InputError
from nnunet_mtl.postprocessing.determine import ValidationCase, determine, determine_lesion_threshold
from nnunet_mtl.postprocessing.lesion_threshold import (
    QUANTA,
    read_region_probabilities,
    thresholded_labels,
    write_region_probabilities,
)
from nnunet_mtl.postprocessing.plan import POSTPROCESSING_FILE, Postprocessing, read_postprocessing


def _labels(whole: np.ndarray, lesion: np.ndarray, threshold: float) -> np.ndarray:
    """Written out: the gland where either region is over 0.5 (nnU-Net's), lesion inside it over the threshold."""
    gland = (whole > 0.5) | (lesion > 0.5)
    return np.where(gland & (lesion > threshold), 2, np.where(gland, 1, 0)).astype(np.uint8)


def test_quantised_probabilities_round_trip_within_half_a_step(tmp_path):
    probabilities = np.random.default_rng(0).random((2, 5, 6, 7)).astype(np.float32)
    path = tmp_path / "case_regions.npz"
    write_region_probabilities(probabilities, path)
    stored = read_region_probabilities(path)
    assert stored.dtype == np.uint8 and stored.shape == probabilities.shape
    assert np.abs(stored / QUANTA - probabilities).max() <= 0.5 / QUANTA + 1e-7
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


@pytest.mark.parametrize("threshold", [0.05, 0.3, 0.5, 0.7])
def test_the_threshold_moves_the_lesion_inside_an_unchanged_gland(threshold):
    quantised = np.random.default_rng(1).integers(0, QUANTA + 1, (2, 6, 7, 8)).astype(np.uint8)
    whole, lesion = quantised / QUANTA
    labels = thresholded_labels(quantised, threshold, QUANTA)
    assert np.array_equal(labels, _labels(whole, lesion, threshold))
    assert np.array_equal(labels > 0, thresholded_labels(quantised, 0.5, QUANTA) > 0)
    assert np.array_equal(thresholded_labels(quantised / QUANTA, threshold), labels)  # probabilities themselves


def test_at_half_it_is_nnunets_region_conversion():
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from nnunet_mtl.data.labels import NNUNET_LABELS, REGIONS_CLASS_ORDER

    manager = LabelManager(NNUNET_LABELS, REGIONS_CLASS_ORDER)
    probabilities = np.random.default_rng(2).random((2, 5, 6, 7)).astype(np.float32)
    expected = manager.convert_probabilities_to_segmentation(probabilities)
    assert np.array_equal(thresholded_labels(probabilities, 0.5), np.asarray(expected))


def _under_segmenting_case(name: str, rim_is_lesion: bool) -> ValidationCase:
    """A lesion whose core has probability 0.9 and whose one-voxel rim 0.25, in a gland of 0.95."""
    whole = np.zeros((12, 24, 24))
    whole[2:10, 4:20, 4:20] = 0.95
    lesion = np.zeros_like(whole)
    lesion[4:8, 8:16, 8:16] = 0.25
    lesion[5:7, 9:15, 9:15] = 0.9
    quantised = np.rint(np.stack([whole, lesion]) * QUANTA).astype(np.uint8)
    truth = _labels(whole, lesion, 0.2 if rim_is_lesion else 0.5)
    prediction = _labels(whole, lesion, 0.5)
    return ValidationCase(name, prediction, truth, 0, [0.6, 0.3, 0.1], quantised)


def test_a_lower_threshold_is_chosen_only_where_the_validation_lesions_are_larger():
    larger = [_under_segmenting_case(f"c{k}", rim_is_lesion=True) for k in range(3)]
    threshold, report = determine_lesion_threshold(larger)
    # 0.2, 0.1 and 0.05 all recover the rim (Dice 1); a tie goes to the cut nearest nnU-Net's 0.5
    assert [r["threshold"] for r in report if r["lesion_dice"] == 1.0] == [0.05, 0.1, 0.2]
    assert threshold == 0.2 and sum(r["chosen"] for r in report) == 1
    exact = [_under_segmenting_case(f"c{k}", rim_is_lesion=False) for k in range(3)]
    assert determine_lesion_threshold(exact)[0] == 0.5
    # folders written before region probabilities were stored keep nnU-Net's threshold
    old = [ValidationCase(c.name, c.prediction, c.truth, 0, c.probabilities) for c in larger]
    assert determine_lesion_threshold(old) == (0.5, [])


def test_a_mean_gain_that_rests_on_few_cases_is_not_taken():
    """Two cases gain 0.56 of lesion Dice at 0.2, one loses as much: the mean gains 0.19, but a resample of the
    three cases loses often enough that the one-sided lower bound is below 0."""
    cases = [_under_segmenting_case(f"c{k}", rim_is_lesion=k < 2) for k in range(3)]
    threshold, report = determine_lesion_threshold(cases)
    row = next(r for r in report if r["threshold"] == 0.2)
    assert row["gain"] > 0.15 and row["lower"] < 0
    assert threshold == 0.5


def test_the_threshold_round_trips_through_the_model_folder(tmp_path):
    cases = [_under_segmenting_case(f"c{k}", rim_is_lesion=True) for k in range(3)]
    postprocessing = determine(cases, "test")
    assert postprocessing.lesion_threshold < 0.5 and not postprocessing.is_identity
    (tmp_path / POSTPROCESSING_FILE).write_text(json.dumps(postprocessing.to_json()))
    assert read_postprocessing(tmp_path).lesion_threshold == postprocessing.lesion_threshold
    # a file written before thresholds existed reads as nnU-Net's 0.5
    (tmp_path / POSTPROCESSING_FILE).write_text('{"temperature": 1.0, "mask_steps": []}')
    assert read_postprocessing(tmp_path) == Postprocessing()
    (tmp_path / POSTPROCESSING_FILE).write_text('{"temperature": 1.0, "mask_steps": [], "lesion_threshold": 1.5}')
    with pytest.raises(InputError, match=r"lesion threshold 1\.5 outside"):
        read_postprocessing(tmp_path)
