"""Confidence intervals by the bootstrap over cases, percentile intervals.

A resample of ``n`` cases drawn with replacement is the same as integer weights on the cases drawn from a
multinomial distribution; :class:`Resampler` draws those weights once (seeded by
``EvaluationConfig.bootstrap_seed``, so the same cases give the same intervals) and every summary metric
is computed on the same resamples as weighted sums (``evaluation/resampled.py``). That keeps the metrics of
one evaluation consistent with each other and costs a few matrix products instead of a thousand calls of
scikit-learn per metric (scipy.stats.bootstrap's way: about 35 s per evaluation for this project's set of
metrics). The value itself always comes from scikit-learn or MONAI; tests check that the weighted form
with unit weights equals it.

Cases where a metric is undefined (both masks empty, say) are left out of each resample's mean, as they
are left out of the mean; resamples on which a whole-split statistic is undefined (a specificity without a
negative case) are left out of its interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nnunet_mtl.config import EVALUATION, EvaluationConfig


@dataclass(frozen=True)
class Estimate:
    """A summary statistic over cases with its bootstrap interval (None where it cannot be computed)."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int

    def to_json(self) -> dict:
        return {"value": self.value, "ci": [self.ci_low, self.ci_high], "n": self.n}


def _defined(value) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


class Resampler:
    """Bootstrap weights for ``n`` cases: ``weights[b, i]`` is how often case ``i`` is in resample ``b``."""

    def __init__(self, n: int, config: EvaluationConfig = EVALUATION):
        self.n = n
        self.config = config
        rng = np.random.default_rng(config.bootstrap_seed)
        size = config.bootstrap_resamples
        self.weights = rng.multinomial(n, np.full(n, 1.0 / n), size=size) if n else np.zeros((size, 0), int)

    def interval(self, resampled: np.ndarray) -> tuple[float | None, float | None]:
        resampled = np.asarray(resampled, dtype=float)
        if self.n < 2 or np.isnan(resampled).all():
            return None, None
        tail = (1 - self.config.confidence_level) / 2 * 100
        low, high = np.nanpercentile(resampled, [tail, 100 - tail])
        return float(low), float(high)

    def estimate(self, value: float | None, resampled: np.ndarray, n: int | None = None) -> Estimate:
        value = _defined(value)
        low, high = (None, None) if value is None else self.interval(resampled)
        return Estimate(value, low, high, self.n if n is None else n)

    def means(self, values: Sequence[float]) -> np.ndarray:
        """Each resample's mean of the defined (non-NaN) values (NaN where a resample has none)."""
        values = np.array([math.nan if v is None else v for v in values], dtype=float)
        defined = ~np.isnan(values)
        weights = self.weights * defined
        with np.errstate(invalid="ignore", divide="ignore"):
            return (weights @ np.where(defined, values, 0.0)) / weights.sum(axis=1)

    def lower_bound(self, values: Sequence[float], confidence: float) -> float:
        """One-sided lower confidence bound of the mean of the defined values (NaN where none is defined): a
        gain whose bound is above 0 is positive with that confidence over these cases."""
        means = self.means(values)
        if np.isnan(means).all():
            return math.nan
        return float(np.nanpercentile(means, 100 * (1 - confidence)))

    def mean(self, values: Sequence[float]) -> Estimate:
        """The mean of the defined values with its interval; ``n`` counts the defined values."""
        values = [math.nan if v is None else float(v) for v in values]
        defined = [v for v in values if not math.isnan(v)]
        if not defined:
            return Estimate(None, None, None, 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.estimate(float(np.mean(defined)), self.means(values), len(defined))
