import numpy as np
import pytest
import torch

from nnunet_mtl.config import ScheduleConfig
from nnunet_mtl.training.case_sampling import CaseSampling, region_errors


def soft_dice(p: np.ndarray, t: np.ndarray) -> float:
    return (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)


def test_region_errors_are_one_minus_the_soft_dice_of_each_sample_averaged_over_regions():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 2, 4, 5, 6)).astype(np.float32)
    target = (rng.random((3, 2, 4, 5, 6)) < 0.3).astype(np.float32)
    target[2, 1] = 0  # a sample without lesion
    p = 1 / (1 + np.exp(-logits))
    expected = [np.mean([1 - soft_dice(p[b, c], target[b, c]) for c in range(2)]) for b in range(3)]
    got = region_errors(torch.from_numpy(logits), torch.from_numpy(target), has_regions=True)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_region_errors_with_labels_leave_out_the_background():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 4, 4, 4)).astype(np.float32)
    labels = rng.integers(0, 3, size=(2, 1, 4, 4, 4))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = [np.mean([1 - soft_dice(p[b, c], labels[b, 0] == c) for c in (1, 2)]) for b in range(2)]
    got = region_errors(torch.from_numpy(logits), torch.from_numpy(labels), has_regions=False)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_a_perfect_prediction_has_no_error():
    target = torch.zeros(1, 2, 4, 4, 4)
    target[0, 0, 1:3, 1:3, 1:3] = 1
    logits = (target * 2 - 1) * 50  # sigmoid is 0 or 1; the empty lesion channel is predicted empty
    assert region_errors(logits, target, has_regions=True)[0] == pytest.approx(0, abs=1e-6)


def test_probabilities_start_uniform_and_give_the_share_by_error():
    sampling = CaseSampling(["a", "b", "c", "d"], share=0.5, memory=0.0)
    np.testing.assert_allclose(sampling.probabilities(), 0.25)
    sampling.update(["a", "b", "c", "d"], [0.6, 0.2, 0.2, 0.0])
    # half uniform (0.125 each), half in proportion to the errors 0.6 : 0.2 : 0.2 : 0
    np.testing.assert_allclose(sampling.probabilities(), [0.125 + 0.3, 0.125 + 0.1, 0.125 + 0.1, 0.125])
    assert sampling.draws.tolist() == [1, 1, 1, 1]


def test_running_error_forgets_at_the_configured_rate_and_counts_draws():
    sampling = CaseSampling(["a", "b"], share=0.5, memory=0.5)
    sampling.update(["a", "a"], [0.0, 0.0])  # a batch may draw a case twice
    assert sampling.errors.tolist() == [0.25, 1.0]  # unseen "b" keeps the starting error
    assert sampling.draws.tolist() == [2, 0]
    assert sampling.summary()["a"] == {"error": 0.25, "probability": pytest.approx(0.25 + 0.5 * 0.2), "draws": 2}


def test_no_error_anywhere_draws_uniformly():
    sampling = CaseSampling(["a", "b"], share=0.9, memory=0.0)
    sampling.update(["a", "b"], [0.0, 0.0])
    np.testing.assert_allclose(sampling.probabilities(), 0.5)


@pytest.mark.parametrize("field", ["hard_case_sampling", "hard_case_memory"])
@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_config_rejects_shares_outside_zero_to_one(field, value):
    with pytest.raises(ValueError, match=field):
        ScheduleConfig(**{field: value})
