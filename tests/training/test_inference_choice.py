"""Choosing predict's path and mirroring on the validation split (training/inference_choice.py)."""

from __future__ import annotations

import json

import pytest

from nnunet_mtl.config import InferenceConfig
from nnunet_mtl.errors import InputError
from nnunet_mtl.inference.choice import (
    INFERENCE_FILE,
    STOCK,
    UNDETERMINED,
    InferenceChoice,
    read_inference_choice,
    remove_inference_choice,
    write_inference_choice,
)
from nnunet_mtl.training.inference_choice import choose_inference, format_choice, score
from nnunet_mtl.training.validation import ValidatedCase

ONE_PASS = InferenceChoice("auto", False)
SLIDING = InferenceChoice("sliding", False)
ONE_PASS_MIRRORED = InferenceChoice("auto", True)
TRUTH = [0, 1, 2, 0, 1, 2]


def cases(whole: float, lesion: float, wrong: int = 0, seconds: float = 0.1, passes: int = 1) -> list:
    """Six validation cases with these Dice values, the first ``wrong`` of them misclassified."""
    return [
        ValidatedCase(
            f"c{i}",
            {"whole_pancreas": whole, "lesion": lesion},
            t,
            (t + 1) % 3 if i < wrong else t,
            [1 / 3] * 3,
            seconds,
            passes,
        )
        for i, t in enumerate(TRUTH)
    ]


class Recorder:
    """A ``validate`` that returns prepared cases per candidate and records the order it was asked in."""

    def __init__(self, outcomes: dict):
        self.outcomes = outcomes
        self.calls: list[InferenceChoice] = []

    def __call__(self, choice: InferenceChoice) -> list:
        self.calls.append(choice)
        return self.outcomes[(choice.path, choice.mirroring)]


def outcomes(one_pass, sliding, one_pass_mirrored, stock) -> dict:
    return {
        ("auto", False): one_pass,
        ("sliding", False): sliding,
        ("auto", True): one_pass_mirrored,
        ("sliding", True): stock,
    }


def test_the_cheapest_candidate_that_keeps_up_is_chosen_and_the_dearer_ones_are_not_run():
    validate = Recorder(
        outcomes(cases(0.95, 0.60, 1), cases(0.95, 0.66), cases(0.95, 0.65), cases(0.95, 0.66, seconds=2, passes=16))
    )
    choice = choose_inference(validate, InferenceConfig(), True, "fold 0")
    # one pass loses 0.06 lesion Dice: out; the sliding window keeps up: chosen; one pass + mirroring never runs
    assert choice == SLIDING
    assert validate.calls == [STOCK, ONE_PASS, SLIDING]
    verdicts = [c["meets_reference"] for c in choice.determined_on["candidates"]]
    assert verdicts == [None, False, True]
    assert choice.determined_on["cases"] == 6 and choice.determined_on["reference"] == STOCK.name
    reference = choice.determined_on["candidates"][0]
    assert reference["forward_passes_per_case"] == 16 and reference["forward_seconds_per_case"] == pytest.approx(2)


def test_the_tolerances_are_inclusive_and_each_rule_counts():
    config = InferenceConfig(choice_dice_tolerance=0.01, choice_subtype_cases=1)
    stock = cases(0.90, 0.60, 1)
    just_within = cases(0.89, 0.59, 2)  # Dice exactly 0.01 lower on both regions, one subtype fewer right
    assert choose_inference(Recorder(outcomes(just_within, stock, stock, stock)), config, True, "f") == ONE_PASS
    whole_off = cases(0.8849, 0.60, 1)
    lesion_off = cases(0.90, 0.5849, 1)
    two_fewer = cases(0.90, 0.60, 3)
    for candidate in (whole_off, lesion_off, two_fewer):
        validate = Recorder(outcomes(candidate, candidate, candidate, stock))
        assert choose_inference(validate, config, True, "f") == STOCK  # none keeps up: stock's own
        assert validate.calls == [STOCK, ONE_PASS, SLIDING, ONE_PASS_MIRRORED]
    stricter = InferenceConfig(choice_subtype_cases=0)  # one pass is now out; the sliding window equals stock
    assert choose_inference(Recorder(outcomes(just_within, stock, stock, stock)), stricter, True, "f") == SLIDING


def test_without_mirror_axes_the_reference_is_the_plain_sliding_window():
    validate = Recorder(outcomes(cases(0.9, 0.6), cases(0.9, 0.6), None, None))
    choice = choose_inference(validate, InferenceConfig(), False, "f")
    assert choice == ONE_PASS and validate.calls == [SLIDING, ONE_PASS]


def test_a_region_empty_in_truth_and_prediction_scores_one():
    """A candidate's false positive where the truth has no lesion (Dice 0) counts against it."""
    empty = cases(0.9, float("nan"))
    stray = cases(0.9, 0.0)
    assert score(STOCK, empty).dice["lesion"] == 1.0
    assert score(ONE_PASS, stray).dice["lesion"] == 0.0
    assert choose_inference(Recorder(outcomes(stray, stray, empty, empty)), InferenceConfig(), True, "f") == (
        ONE_PASS_MIRRORED
    )


def test_the_choice_round_trips_through_the_fold_folders_and_an_ensemble_takes_the_dearest(tmp_path):
    validate = Recorder(outcomes(cases(0.9, 0.5), cases(0.9, 0.6), cases(0.9, 0.6), cases(0.9, 0.6)))
    choice = choose_inference(validate, InferenceConfig(), True, "fold 0")
    write_inference_choice(tmp_path / "fold_0", choice)
    again = read_inference_choice(tmp_path, [0])
    assert again == choice == SLIDING and again.determined_on == choice.determined_on
    text = format_choice(again)
    assert "sliding window" in text and "does not keep up" in text and "reference" in text and "6 one pass" in text
    assert read_inference_choice(tmp_path, [1]) == UNDETERMINED  # a fold without one: one pass
    cheap = choose_inference(Recorder(outcomes(*[cases(0.9, 0.6)] * 4)), InferenceConfig(), True, "fold 1")
    write_inference_choice(tmp_path / "fold_1", cheap)
    assert cheap == ONE_PASS and read_inference_choice(tmp_path, [1]) == ONE_PASS
    assert read_inference_choice(tmp_path, [0, 1]) == SLIDING  # never cheaper than any member was validated
    remove_inference_choice(tmp_path / "fold_0")
    assert read_inference_choice(tmp_path, [0, 1]) == ONE_PASS
    forced = InferenceChoice("whole", True)  # a hand-written path that no candidate has
    write_inference_choice(tmp_path / "fold_0", forced)
    assert read_inference_choice(tmp_path, [0, 1]) == forced


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"{", "not an inference configuration"),
        (b"\xff\xfe not text", "not an inference configuration"),
        (json.dumps({"path": "whole"}).encode(), "not an inference configuration"),
        (json.dumps({"path": "tiles", "mirroring": False}).encode(), "unknown path 'tiles'"),
        (json.dumps({"path": "auto", "mirroring": "yes"}).encode(), "mirroring must be true or false"),
        (json.dumps({"path": "auto", "mirroring": True, "determined_on": {"cases": 3}}).encode(), "determined_on"),
    ],
)
def test_a_damaged_choice_file_is_a_one_line_error_naming_it(tmp_path, content, problem):
    path = tmp_path / "fold_0" / INFERENCE_FILE
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(InputError) as error:
        read_inference_choice(tmp_path, [0])
    assert str(path) in str(error.value) and problem in str(error.value)
    assert "\n" not in str(error.value)
