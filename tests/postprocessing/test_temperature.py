import numpy as np
import pytest
from scipy.special import softmax

from nnunet_mtl.evaluation.calibration import expected_calibration_error, multiclass_log_loss
from nnunet_mtl.postprocessing.temperature import fit_temperature, scaled_probabilities


def _overconfident(seed, n):
    """Cases whose true log-odds are ``logits``, reported three times too sharp."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    logits = rng.normal(0, 1.0, (n, 3))
    logits[np.arange(n), truth] += 1.0
    # draw the labels from the model's own (true) probabilities so that T = 3 is the right answer
    truth = np.array([rng.choice(3, p=p) for p in softmax(logits, axis=1)])
    return truth, softmax(3.0 * logits, axis=1)


def test_temperature_lowers_held_out_calibration_error_and_keeps_the_argmax():
    fit_truth, fit_probabilities = _overconfident(0, 400)
    test_truth, test_probabilities = _overconfident(1, 400)
    temperature = fit_temperature(fit_truth, fit_probabilities, prior_sd=1.0, min_temperature=1.0)
    assert 2.3 < temperature < 3.8  # the miscalibration put in
    calibrated = scaled_probabilities(np.log(test_probabilities), temperature)
    assert np.array_equal(calibrated.argmax(axis=1), test_probabilities.argmax(axis=1))
    before = expected_calibration_error(test_truth, test_probabilities, 10)
    after = expected_calibration_error(test_truth, calibrated, 10)
    assert after < before / 2
    assert multiclass_log_loss(test_truth, calibrated) < multiclass_log_loss(test_truth, test_probabilities)


def test_a_perfect_validation_split_sharpens_nothing():
    truth = np.array([0, 1, 2] * 4)
    probabilities = np.full((12, 3), 0.2)
    probabilities[np.arange(12), truth] = 0.6  # every case right
    # unconstrained, the prior keeps the fit off certainty (T -> 0) but it still sharpens
    free = fit_temperature(truth, probabilities, prior_sd=1.0, min_temperature=0.05)
    assert 0.05 < free < 1.0
    assert fit_temperature(truth, probabilities, prior_sd=0.01, min_temperature=0.05) == pytest.approx(1.0, abs=0.01)
    # the default only softens: these cases are no evidence that new ones will be as sure
    assert fit_temperature(truth, probabilities, prior_sd=1.0, min_temperature=1.0) == 1.0


def test_scaled_probabilities_are_a_softmax_of_the_logits():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.1, 0.2]])
    assert np.allclose(scaled_probabilities(logits, 2.0), softmax(logits / 2.0, axis=1))
    assert np.allclose(scaled_probabilities(np.log(softmax(logits, axis=1)), 1.0), softmax(logits, axis=1))
