"""How far the subtype probabilities can be believed: ROC AUC, log loss, Brier score and the expected
calibration error (ECE) with its reliability diagram.

ECE is the top-label form (Guo et al. 2017): cases are binned by the probability of their predicted
subtype (equal-width bins), and ECE is the case-weighted mean gap between a bin's mean confidence and its
accuracy, binned by MONAI's ``calibration_binning``. The Brier score is the multiclass one (the mean over
cases of the squared distance to the one-hot truth, 0 to 2). ROC AUC is the macro one-vs-rest mean; it is
undefined when a subtype is missing from the truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from nnunet_mtl.evaluation.metrics import SUBTYPE_LABELS


@dataclass(frozen=True)
class Reliability:
    bin_edges: list[float]
    confidence: list[float | None]  # mean top-label probability per bin (None: empty bin)
    accuracy: list[float | None]
    count: list[int]


@dataclass(frozen=True)
class ProbabilityMetrics:
    roc_auc_ovr: float | None
    log_loss: float
    brier: float
    ece: float
    reliability: Reliability
    n: int

    def to_json(self) -> dict:
        return asdict(self)


def normalised(probabilities: Sequence[Sequence[float]]) -> np.ndarray:
    """Rows that sum to 1 (the CSVs hold six decimals)."""
    array = np.asarray(probabilities, dtype=float)
    return array / array.sum(axis=1, keepdims=True)


def reliability(truth, probabilities, bins: int) -> Reliability:
    from monai.metrics import calibration_binning

    probabilities = normalised(probabilities)
    confidence = torch.tensor(probabilities.max(axis=1), dtype=torch.float32)[None, None]
    correct = torch.tensor(probabilities.argmax(axis=1) == np.asarray(truth), dtype=torch.float32)[None, None]
    mean_p, mean_correct, counts = calibration_binning(confidence, correct, num_bins=bins)

    def values(tensor: torch.Tensor) -> list[float | None]:
        return [None if math.isnan(v) else float(v) for v in tensor[0, 0].tolist()]

    return Reliability(
        [float(e) for e in np.linspace(0.0, 1.0, bins + 1)],
        values(mean_p),
        values(mean_correct),
        [int(c) for c in counts[0, 0].tolist()],
    )


def expected_calibration_error(truth, probabilities, bins: int) -> float:
    bins_of = reliability(truth, probabilities, bins)
    total = sum(bins_of.count)
    gaps = [count * abs(p - a) for p, a, count in zip(bins_of.confidence, bins_of.accuracy, bins_of.count) if count > 0]
    return float(sum(gaps) / total)


def roc_auc(truth, probabilities) -> float:
    """Macro one-vs-rest ROC AUC; NaN when a subtype is missing from ``truth``."""
    if len(set(np.asarray(truth).tolist())) < len(SUBTYPE_LABELS):
        return math.nan
    return float(roc_auc_score(truth, normalised(probabilities), multi_class="ovr", labels=SUBTYPE_LABELS))


def multiclass_log_loss(truth, probabilities) -> float:
    return float(log_loss(truth, normalised(probabilities), labels=SUBTYPE_LABELS))


def multiclass_brier(truth, probabilities) -> float:
    return float(brier_score_loss(truth, normalised(probabilities), labels=SUBTYPE_LABELS))


def probability_metrics(
    truth: Sequence[int], probabilities: Sequence[Sequence[float]], bins: int
) -> ProbabilityMetrics:
    auc = roc_auc(truth, probabilities)
    return ProbabilityMetrics(
        None if math.isnan(auc) else auc,
        multiclass_log_loss(truth, probabilities),
        multiclass_brier(truth, probabilities),
        expected_calibration_error(truth, probabilities, bins),
        reliability(truth, probabilities, bins),
        len(truth),
    )
