"""The subtype readout fitted after training: a shrinkage LDA on the head's features of the training split.

The head's MLP learns, during training, from features pooled over the reference masks of augmented patches;
users get features pooled over the predicted masks of whole cases. Linear probes on one phantom model
(README, "The fitted readout") classify the predicted pooling far better when fitted on it, and a shrinkage
LDA (Ledoit-Wolf covariance, equal priors for macro F1) is what a few dozen cases can estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FittedReadout:
    weight: np.ndarray  # (classes, features): logits = features @ weight.T + bias
    bias: np.ndarray  # (classes,)
    num_cases: int
    training_accuracy: float  # on the cases it was fitted on (optimistic)


def readout_problem(subtypes: Sequence[int], num_classes: int, min_cases_per_class: int) -> str | None:
    """Why no readout can be fitted on these cases' subtypes, or None."""
    counts = np.bincount(np.asarray(subtypes, dtype=int), minlength=num_classes)[:num_classes]
    if counts.min() < min_cases_per_class:
        return f"subtype counts {counts.tolist()}: every subtype needs at least {min_cases_per_class} training cases"
    return None


def fit_readout(features: np.ndarray, subtypes: Sequence[int], num_classes: int) -> FittedReadout:
    """Shrinkage LDA of ``features`` (cases, features) with equal class priors, as the logits' linear map:
    the softmax of its logits is the LDA's posterior (scikit-learn's ``predict_proba``)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    y = np.asarray(subtypes, dtype=int)
    x = np.asarray(features, dtype=np.float64)
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=np.full(num_classes, 1 / num_classes))
    lda.fit(x, y)
    weight, bias = lda.coef_, lda.intercept_
    if weight.shape[0] == 1:  # two classes: scikit-learn keeps one decision function, the second class's
        weight, bias = np.concatenate([-weight / 2, weight / 2]), np.concatenate([-bias / 2, bias / 2])
    accuracy = float(np.mean(lda.predict(x) == y))
    return FittedReadout(weight.astype(np.float32), bias.astype(np.float32), len(y), accuracy)


def format_readout(fitted: FittedReadout | None, problem: str | None = None, path: str | None = None) -> str:
    if fitted is None:
        return f"subtype readout: the MLP ({problem})"
    path = path or "predict's path"
    return (
        f"subtype readout: shrinkage LDA fitted on the head's features of {fitted.num_cases} training cases "
        f"(predicted masks, {path}; accuracy on them {fitted.training_accuracy:.3f})"
    )
