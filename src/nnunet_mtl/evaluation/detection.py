"""Lesion detection per case: is a lesion present in the truth, and in the prediction?

A lesion is present when its volume (all lesion voxels of the case) reaches
``EvaluationConfig.lesion_min_volume_mm3``. Sensitivity is the share of cases with a true lesion whose
prediction has one, specificity the share of cases without a true lesion whose prediction has none; each
is undefined (null) when the split has no case of its kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from sklearn.metrics import recall_score

from nnunet_mtl.config import EVALUATION, EvaluationConfig
from nnunet_mtl.evaluation.bootstrap import Estimate, Resampler
from nnunet_mtl.evaluation.resampled import rate_of


@dataclass(frozen=True)
class DetectionSummary:
    min_volume_mm3: float
    sensitivity: Estimate
    specificity: Estimate
    n_positive: int
    n_negative: int
    missed: list[str]  # true lesion, none predicted
    false_alarms: list[str]  # lesion predicted, none in the truth

    def to_json(self) -> dict:
        return {
            "min_volume_mm3": self.min_volume_mm3,
            "sensitivity": self.sensitivity.to_json(),
            "specificity": self.specificity.to_json(),
            "n_positive": self.n_positive,
            "n_negative": self.n_negative,
            "missed": self.missed,
            "false_alarms": self.false_alarms,
        }


def _rate(truth: np.ndarray, prediction: np.ndarray, positive: bool) -> float:
    """Recall of the ``positive`` (sensitivity) or negative (specificity) class; NaN with no such case."""
    if not np.any(truth == positive):
        return float("nan")
    return float(recall_score(truth, prediction, pos_label=positive, zero_division=0))


def lesion_present(lesion_ml: float, config: EvaluationConfig = EVALUATION) -> bool:
    return lesion_ml * 1000.0 >= config.lesion_min_volume_mm3


def detection_summary(
    names: Sequence[str],
    present_true: Sequence[bool],
    present_pred: Sequence[bool],
    resampler: Resampler,
) -> DetectionSummary:
    truth, prediction = np.asarray(present_true, dtype=bool), np.asarray(present_pred, dtype=bool)
    n_positive, n_negative = int(truth.sum()), int((~truth).sum())
    weights = resampler.weights
    sensitivity = resampler.estimate(_rate(truth, prediction, True), rate_of(truth, prediction, weights, True))
    specificity = resampler.estimate(_rate(truth, prediction, False), rate_of(truth, prediction, weights, False))
    return DetectionSummary(
        resampler.config.lesion_min_volume_mm3,
        replace(sensitivity, n=n_positive),
        replace(specificity, n=n_negative),
        n_positive,
        n_negative,
        [str(n) for n, t, p in zip(names, truth, prediction) if t and not p],
        [n for n, t, p in zip(names, truth, prediction) if p and not t],
    )
