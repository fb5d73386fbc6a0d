import numpy as np
import pytest
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from nnunet_mtl.training.readout import fit_readout, format_readout, readout_problem


def _cases(num_classes: int, per_class: tuple[int, ...], features: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1.5, (num_classes, features))
    y = np.concatenate([np.full(n, k) for k, n in enumerate(per_class)])
    return means[y] + rng.normal(0, 1, (len(y), features)), y


@pytest.mark.parametrize("num_classes, per_class", [(3, (10, 14, 12)), (2, (6, 20))])
def test_logits_give_the_shrinkage_lda_posterior_with_equal_priors(num_classes, per_class):
    x, y = _cases(num_classes, per_class)
    fitted = fit_readout(x, y, num_classes)
    assert fitted.weight.shape == (num_classes, x.shape[1]) and fitted.bias.shape == (num_classes,)
    logits = torch.from_numpy(x).float() @ torch.from_numpy(fitted.weight).t() + torch.from_numpy(fitted.bias)
    reference = LinearDiscriminantAnalysis(
        solver="lsqr", shrinkage="auto", priors=np.full(num_classes, 1 / num_classes)
    )
    expected = reference.fit(x, y).predict_proba(x)
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), expected, atol=1e-4)
    assert fitted.num_cases == len(y)
    assert fitted.training_accuracy == pytest.approx(np.mean(expected.argmax(1) == y))


def test_equal_priors_do_not_favour_the_larger_class():
    # one feature, two classes at -1 and +1: with equal priors the boundary is at 0 whatever the counts
    rng = np.random.default_rng(1)
    y = np.array([0] * 40 + [1] * 8)
    x = np.where(y == 0, -1.0, 1.0)[:, None] + rng.normal(0, 0.5, (48, 1))
    x -= np.array([x[y == 0].mean() + x[y == 1].mean()])[None] / 2  # centre the class means on 0 exactly
    fitted = fit_readout(x, y, 2)
    at_boundary = fitted.weight @ np.zeros(1) + fitted.bias
    assert at_boundary[0] == pytest.approx(at_boundary[1], abs=1e-5)


def test_too_few_cases_of_a_subtype_keeps_the_mlp():
    assert readout_problem([0, 0, 1, 1, 2, 2], 3, 2) is None
    problem = readout_problem([0, 0, 1, 1, 2], 3, 2)
    assert "[2, 2, 1]" in problem and "at least 2" in problem
    assert "[2, 2, 0]" in readout_problem([0, 0, 1, 1], 3, 1)
    assert format_readout(None, problem).startswith("subtype readout: the MLP (subtype counts")


def test_the_head_config_refuses_an_unknown_readout_and_too_few_cases():
    from nnunet_mtl.config import HeadConfig

    with pytest.raises(ValueError, match="'mlp' or 'lda'"):
        HeadConfig(readout="LDA")
    with pytest.raises(ValueError, match=">= 2"):
        HeadConfig(readout_min_cases_per_class=1)
