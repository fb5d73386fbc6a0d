import json

import numpy as np
import pytest

from nnunet_mtl.errors import InputError
from nnunet_mtl.postprocessing.components import apply_step
from nnunet_mtl.postprocessing.determine import ValidationCase, determine, determine_mask_steps
from nnunet_mtl.postprocessing.plan import POSTPROCESSING_FILE, read_postprocessing, write_postprocessing


def _gland(shape=(16, 40, 40)):
    labels = np.zeros(shape, np.uint8)
    labels[4:12, 8:24, 8:30] = 1
    labels[6:10, 12:18, 12:18] = 2
    return labels


def test_distant_island_is_removed_and_the_gland_kept():
    truth = _gland()
    prediction = truth.copy()
    prediction[2:5, 30:36, 32:38] = 1  # a false-positive island far from the gland
    prediction[10:12, 32:35, 2:5] = 2  # and a lesion island outside it
    cleaned = apply_step(prediction, "keep_largest_gland")
    assert np.array_equal(cleaned, truth)
    lesion_only = apply_step(prediction, "drop_lesion_outside_gland")
    assert not (lesion_only[10:12, 32:35, 2:5] == 2).any() and (lesion_only[2:5, 30:36, 32:38] == 1).all()


def test_a_second_lesion_component_becomes_pancreas():
    prediction = _gland()
    prediction[5:7, 20:22, 24:27] = 2  # a small second lesion inside the gland
    cleaned = apply_step(prediction, "keep_largest_lesion")
    assert (cleaned[5:7, 20:22, 24:27] == 1).all()
    assert np.array_equal(cleaned == 2, _gland() == 2)
    assert np.array_equal(cleaned > 0, prediction > 0)  # the gland is untouched


def test_steps_on_empty_masks_change_nothing():
    empty = np.zeros((4, 5, 6), np.uint8)
    for step in ("keep_largest_gland", "drop_lesion_outside_gland", "keep_largest_lesion"):
        assert np.array_equal(apply_step(empty, step), empty)


def _case(name, prediction, truth, subtype=0, probabilities=(0.6, 0.3, 0.1)):
    return ValidationCase(name, prediction, truth, subtype, list(probabilities))


def test_a_step_is_kept_only_where_it_helps_on_validation():
    truth = _gland()
    with_island = truth.copy()
    with_island[2:5, 30:36, 32:38] = 1
    kept, report = determine_mask_steps([_case("a", with_island, truth), _case("b", truth.copy(), truth)])
    assert kept == ("keep_largest_gland",)
    assert report[0]["mean_dice_after"]["whole_pancreas"] > report[0]["mean_dice_before"]["whole_pancreas"]

    # a gland that really is in two parts: keeping the largest would cut the true second part
    split = truth.copy()
    split[2:5, 30:36, 32:38] = 1
    kept, _ = determine_mask_steps([_case("a", split.copy(), split)])
    assert "keep_largest_gland" not in kept


def test_determined_postprocessing_round_trips_through_the_model_folder(tmp_path):
    truth = _gland()
    cases = [_case(f"c{k}", truth.copy(), truth, k % 3, np.roll([0.5, 0.3, 0.2], k % 3)) for k in range(6)]
    postprocessing = determine(cases, "test")
    path = write_postprocessing(tmp_path, postprocessing)
    assert path.name == POSTPROCESSING_FILE
    assert read_postprocessing(tmp_path) == postprocessing
    assert json.loads(path.read_text())["determined_on"]["cases"] == 6
    path.write_text('{"temperature": -1, "mask_steps": []}')
    with pytest.raises(InputError, match="temperature"):
        read_postprocessing(tmp_path)
    path.write_text("{")
    with pytest.raises(InputError, match="not a postprocessing file"):
        read_postprocessing(tmp_path)
