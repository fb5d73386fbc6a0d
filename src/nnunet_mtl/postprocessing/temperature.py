"""Temperature scaling of the subtype probabilities (Guo et al. 2017): ``softmax(logits / T)``.

One temperature is fitted on the validation predictions by maximising the likelihood of the true subtypes,
with a normal prior on ``log T`` (``PostprocessingConfig.log_temperature_prior_sd``): where every validation
case is right, plain maximum likelihood sends T to 0 (certainty), which no held-out case supports. T is at
least ``PostprocessingConfig.min_temperature`` (1: softening only, see there why). A temperature never
changes the argmax, so the subtypes stay the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

MAX_TEMPERATURE = 20.0


def scaled_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / T)`` along the last axis; ``logits`` may be log-probabilities (the same thing up to a
    constant per case)."""
    return np.exp(log_softmax(np.asarray(logits, dtype=float) / temperature, axis=-1))


def _log(probabilities) -> np.ndarray:
    return np.log(np.clip(np.asarray(probabilities, dtype=float), 1e-12, None))


def rescaled_probabilities(probabilities, temperature: float) -> np.ndarray:
    """Probabilities (a CSV's, say) as they are at ``temperature``: their logarithms are the logits up to a
    constant per case."""
    return scaled_probabilities(_log(probabilities), temperature)


def fit_temperature(
    truth: Sequence[int], probabilities: Sequence[Sequence[float]], prior_sd: float, min_temperature: float
) -> float:
    """The maximum a posteriori temperature, at least ``min_temperature``, for the cases' true subtypes and
    their (uncalibrated) probabilities."""
    log_p = _log(probabilities)
    truth = np.asarray(truth)

    def objective(log_t: float) -> float:
        nll = -log_softmax(log_p / math.exp(log_t), axis=1)[np.arange(len(truth)), truth].sum()
        return nll + log_t**2 / (2 * prior_sd**2)

    bounds = (math.log(min_temperature), math.log(MAX_TEMPERATURE))
    result = minimize_scalar(objective, bounds=bounds, method="bounded", options={"xatol": 1e-4})
    # the bounded search stops within its tolerance of a bound it runs into: there, the bound is the answer
    return min_temperature if objective(bounds[0]) <= result.fun else float(math.exp(result.x))
