"""Summary statistics on bootstrap resamples: the weighted forms equal scikit-learn's and MONAI's metrics, and
the intervals are reproducible per seed."""

import math
from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    matthews_corrcoef,
    roc_auc_score,
)

from nnunet_mtl.config import EVALUATION
from nnunet_mtl.evaluation import resampled
from nnunet_mtl.evaluation.bootstrap import Resampler
from nnunet_mtl.evaluation.calibration import expected_calibration_error, reliability
from nnunet_mtl.evaluation.metrics import classification_summary
from nnunet_mtl.evaluation.summary import label_intervals, probability_section


def _draw(seed, n=40, classes=(0, 1, 2)):
    rng = np.random.default_rng(seed)
    truth = rng.choice(classes, n)
    prediction = np.where(rng.random(n) < 0.6, truth, rng.integers(0, 3, n))
    probabilities = rng.dirichlet([0.7, 0.7, 0.7], n)
    return truth, prediction, probabilities


def _resample(arrays, weights_row):
    index = np.repeat(np.arange(len(weights_row)), weights_row)
    return [np.asarray(a)[index] for a in arrays]


@pytest.mark.parametrize("seed", range(6))
def test_weighted_label_metrics_equal_sklearn_on_resamples(seed):
    # seeds 4 and 5: a subtype absent from the truth (macro F1 and balanced accuracy must follow sklearn)
    truth, prediction, _ = _draw(seed, classes=(0, 1, 2) if seed < 4 else (0, 2))
    weights = Resampler(len(truth), replace(EVALUATION, bootstrap_resamples=8, bootstrap_seed=seed)).weights
    counts = resampled.confusion_counts(truth, prediction, weights, 3)
    for b, row in enumerate(weights):
        t, p = _resample([truth, prediction], row)
        assert resampled.macro_f1_of(counts)[b] == pytest.approx(f1_score(t, p, average="macro", zero_division=0))
        assert resampled.accuracy_of(counts)[b] == pytest.approx(accuracy_score(t, p))
        with pytest.warns(UserWarning) if len(set(p) - set(t)) else _nothing():
            expected = balanced_accuracy_score(t, p)
        assert resampled.balanced_accuracy_of(counts)[b] == pytest.approx(expected)
        assert resampled.mcc_of(counts)[b] == pytest.approx(matthews_corrcoef(t, p))
        per_class = f1_score(t, p, labels=[0, 1, 2], average=None, zero_division=0)
        assert resampled.f1_per_class_of(counts)[b] == pytest.approx(per_class)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("seed", range(4))
def test_weighted_probability_metrics_equal_the_libraries_on_resamples(seed):
    truth, _, probabilities = _draw(seed)
    resampler = Resampler(len(truth), replace(EVALUATION, bootstrap_resamples=6, bootstrap_seed=seed))
    auc = resampled.roc_auc_of(truth, probabilities, resampler.weights)
    ece = resampled.ece_of(truth, probabilities, resampler.weights, 10)
    log_losses = resampler.means(resampled.per_case_log_loss(truth, probabilities))
    briers = resampler.means(resampled.per_case_brier(truth, probabilities))
    for b, row in enumerate(resampler.weights):
        t, p = _resample([truth, probabilities], row)
        if len(set(t)) == 3:
            assert auc[b] == pytest.approx(roc_auc_score(t, p, multi_class="ovr", labels=[0, 1, 2]))
        else:
            assert math.isnan(auc[b])
        assert ece[b] == pytest.approx(expected_calibration_error(t, p, 10), abs=1e-6)
        assert log_losses[b] == pytest.approx(log_loss(t, p, labels=[0, 1, 2]))
        assert briers[b] == pytest.approx(brier_score_loss(t, p, labels=[0, 1, 2]))


def test_ece_by_hand():
    # confidences 0.92, 0.92 (one right), 0.63 (right), 0.43 (wrong), in bins 9, 6 and 4 of ten
    truth = [0, 1, 0, 2]
    probabilities = [[0.92, 0.04, 0.04], [0.92, 0.04, 0.04], [0.63, 0.27, 0.1], [0.43, 0.32, 0.25]]
    # |0.92 - 0.5| * 2 + |0.63 - 1| * 1 + |0.43 - 0| * 1, over 4 cases
    assert expected_calibration_error(truth, probabilities, 10) == pytest.approx((0.84 + 0.37 + 0.43) / 4, abs=1e-6)
    bins = reliability(truth, probabilities, 10)
    assert sum(bins.count) == 4 and bins.count[9] == 2 and bins.accuracy[9] == pytest.approx(0.5)


def test_intervals_are_reproducible_per_seed_and_hold_the_value():
    truth, prediction, probabilities = _draw(0, n=60)
    summary = classification_summary(list(truth), list(prediction))
    first = label_intervals(truth, prediction, summary, Resampler(60))
    again = label_intervals(truth, prediction, summary, Resampler(60))
    other = label_intervals(truth, prediction, summary, Resampler(60, replace(EVALUATION, bootstrap_seed=1)))
    assert first == again and first != other
    for name, estimate in first.items():
        low, high = estimate["ci"]
        assert low <= estimate["value"] <= high, name
    assert first["macro_f1"]["value"] == summary.macro_f1
    section = probability_section(truth, probabilities, Resampler(60))
    assert section == probability_section(truth, probabilities, Resampler(60))
    assert section["intervals"]["ece"]["value"] == section["ece"]


def test_mean_leaves_undefined_cases_out():
    resampler = Resampler(5)
    estimate = resampler.mean([0.2, math.nan, 0.4, 0.6, None])
    assert estimate.value == pytest.approx(0.4) and estimate.n == 3
    assert 0.2 <= estimate.ci_low <= estimate.ci_high <= 0.6
    assert resampler.mean([math.nan] * 5).value is None
    assert Resampler(1).mean([0.5]).ci_low is None  # no interval from one case


def test_the_lower_bound_is_the_one_sided_percentile_of_the_resampled_means():
    from nnunet_mtl.evaluation.bootstrap import Resampler

    values = [0.1, -0.2, 0.3, float("nan"), 0.05, 0.2]
    resampler = Resampler(len(values))
    means = resampler.means(values)
    assert resampler.lower_bound(values, 0.95) == pytest.approx(np.nanpercentile(means, 5))
    assert resampler.lower_bound(values, 0.95) < resampler.lower_bound(values, 0.6) < np.nanmean(values)
    assert np.isnan(Resampler(2).lower_bound([float("nan"), float("nan")], 0.95))
