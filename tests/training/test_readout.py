import numpy as np
import pytest
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from nnunet_mtl.training.readout import choose_readout, fit_readout, fit_readouts, format_readout, readout_problem


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


def test_a_readout_on_some_columns_is_the_lda_of_those_columns_with_zero_weight_elsewhere():
    x, y = _cases(3, (10, 14, 12))
    columns = np.arange(30, 40)
    fitted = fit_readout(x, y, 3, columns, "statistics")
    assert fitted.features == "statistics" and not fitted.weight[:, :30].any() and fitted.weight[:, 30:].all()
    reference = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=np.full(3, 1 / 3))
    expected = reference.fit(x[:, columns], y).predict_proba(x[:, columns])
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(fitted.logits(x)), 1).numpy(), expected, atol=1e-4)


def test_the_candidates_follow_the_config_order_and_a_head_without_statistics_has_only_all():
    x, y = _cases(3, (10, 14, 12))
    fitted = fit_readouts(x, y, 3, ("statistics", "all"), num_statistics=11)
    assert [f.features for f in fitted] == ["statistics", "all"]
    assert not fitted[0].weight[:, :29].any() and fitted[0].weight[:, 29:].all() and fitted[1].weight.all()
    assert [f.features for f in fit_readouts(x, y, 3, ("statistics", "all"), num_statistics=0)] == ["all"]
    assert [f.features for f in fit_readouts(x, y, 3, ("all",), num_statistics=11)] == ["all"]


def _two_blocks(n_per_class: int, informative: str, seed: int):
    """30 'stage' features then 10 'statistics'; only the ``informative`` block separates the classes."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n_per_class)
    x = rng.normal(0, 1, (len(y), 40))
    block = slice(0, 30) if informative == "stages" else slice(30, 40)
    means = rng.normal(0, 1.2, (3, x[:, block].shape[1]))
    x[:, block] += means[y]
    return x, y


def _split(informative: str, validation_per_class: int):
    x, y = _two_blocks(12 + validation_per_class, informative, seed=3)
    train = np.concatenate([np.arange(k * len(y) // 3, k * len(y) // 3 + 12) for k in range(3)])
    validation = np.setdiff1d(np.arange(len(y)), train)
    return (x[train], y[train]), (x[validation], y[validation])


def test_the_richer_readout_is_chosen_only_where_the_validation_cases_show_its_gain_with_confidence():
    (x, y), (xv, yv) = _split("stages", validation_per_class=20)  # the statistics carry nothing
    candidates = fit_readouts(x, y, 3, ("statistics", "all"), num_statistics=10)
    chosen = choose_readout(candidates, xv, yv, confidence=0.95)
    statistics_row, all_row = chosen.choice
    assert (
        chosen.features == "all" and chosen is not candidates[1] and np.array_equal(chosen.weight, candidates[1].weight)
    )
    right = [np.mean(c.logits(xv).argmax(1) == yv) for c in candidates]
    assert statistics_row == {"features": "statistics", "accuracy": right[0], "gain": 0.0, "lower": 0.0}
    assert all_row["accuracy"] == right[1] and all_row["gain"] == pytest.approx(right[1] - right[0])
    assert all_row["lower"] > 0
    assert "validation accuracy statistics: " in format_readout(chosen) and "lower bound +" in format_readout(chosen)


def test_the_simplest_readout_stays_where_the_richer_one_is_no_better_or_its_gain_is_not_sure():
    (x, y), (xv, yv) = _split("statistics", validation_per_class=20)  # the stages carry nothing
    candidates = fit_readouts(x, y, 3, ("statistics", "all"), num_statistics=10)
    assert choose_readout(candidates, xv, yv, confidence=0.95).features == "statistics"
    # a richer readout right on one case more out of three: a gain, but no confidence in it
    (x, y), (xv, yv) = _split("stages", validation_per_class=20)
    candidates = fit_readouts(x, y, 3, ("statistics", "all"), num_statistics=10)
    right = [c.logits(xv).argmax(1) == yv for c in candidates]
    few = np.flatnonzero(right[1] & ~right[0])[:1].tolist() + np.flatnonzero(right[1] == right[0])[:2].tolist()
    chosen = choose_readout(candidates, xv[few], yv[few], confidence=0.95)
    assert chosen.features == "statistics" and chosen.choice[1]["gain"] == pytest.approx(1 / 3)
    assert chosen.choice[1]["lower"] <= 0


def test_the_head_config_refuses_unknown_or_repeated_readout_features():
    from nnunet_mtl.config import HeadConfig

    for features in ((), ("all", "all"), ("stages",)):
        with pytest.raises(ValueError, match="readout_features"):
            HeadConfig(readout_features=features)
    with pytest.raises(ValueError, match="readout_choice_confidence"):
        HeadConfig(readout_choice_confidence=1.0)
