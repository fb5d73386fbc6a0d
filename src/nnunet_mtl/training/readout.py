"""The subtype readout fitted after training: a shrinkage LDA on the head's features of the training split.

The head's MLP learns, during training, from features pooled over the reference masks of augmented patches;
users get features pooled over the predicted masks of whole cases. Linear probes on one phantom model
(README, "The fitted readout") classify the predicted pooling far better when fitted on it, and a shrinkage
LDA (Ledoit-Wolf covariance, equal priors for macro F1) is what a few dozen cases can estimate.

Which features it may use is chosen on the validation split (:func:`choose_readout`): the network segments
the training cases it learnt from better than unseen ones, so their pooled stage features separate the
subtypes more cleanly than an unseen case's will, and an LDA over every feature trusts them too far. The
intensity statistics are read off the image, not learnt, and move only as far as the mask does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from nnunet_mtl.config import EVALUATION, ReadoutFeatures
from nnunet_mtl.evaluation.bootstrap import Resampler


@dataclass(frozen=True)
class FittedReadout:
    weight: np.ndarray  # (classes, features): logits = features @ weight.T + bias
    bias: np.ndarray  # (classes,)
    num_cases: int
    training_accuracy: float  # on the cases it was fitted on (optimistic)
    features: ReadoutFeatures = "all"  # which features it reads; zero weight on the others
    # how it was chosen on the validation split: one row per candidate (see choose_readout)
    choice: tuple[dict, ...] = field(default=(), compare=False)

    def logits(self, features: np.ndarray) -> np.ndarray:
        """The class logits of (cases, features), as the head's readout computes them."""
        return np.asarray(features, dtype=np.float64) @ self.weight.T.astype(np.float64) + self.bias


def readout_problem(subtypes: Sequence[int], num_classes: int, min_cases_per_class: int) -> str | None:
    """Why no readout can be fitted on these cases' subtypes, or None."""
    counts = np.bincount(np.asarray(subtypes, dtype=int), minlength=num_classes)[:num_classes]
    if counts.min() < min_cases_per_class:
        return f"subtype counts {counts.tolist()}: every subtype needs at least {min_cases_per_class} training cases"
    return None


def readout_columns(name: ReadoutFeatures, num_features: int, num_statistics: int) -> np.ndarray | None:
    """The feature columns a readout on ``name`` reads (the statistics are the head's last
    ``num_statistics`` features); None where the head has no such features."""
    if name == "all":
        return np.arange(num_features)
    return np.arange(num_features - num_statistics, num_features) if num_statistics else None


def fit_readout(
    features: np.ndarray,
    subtypes: Sequence[int],
    num_classes: int,
    columns: np.ndarray | None = None,
    name: ReadoutFeatures = "all",
) -> FittedReadout:
    """Shrinkage LDA of ``features`` (cases, features) with equal class priors, as the logits' linear map:
    the softmax of its logits is the LDA's posterior (scikit-learn's ``predict_proba``). With ``columns``,
    fitted on those features only, and zero weight on the others."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    y = np.asarray(subtypes, dtype=int)
    x = np.asarray(features, dtype=np.float64)
    columns = np.arange(x.shape[1]) if columns is None else np.asarray(columns)
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=np.full(num_classes, 1 / num_classes))
    lda.fit(x[:, columns], y)
    coef, bias = lda.coef_, lda.intercept_
    if coef.shape[0] == 1:  # two classes: scikit-learn keeps one decision function, the second class's
        coef, bias = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-bias / 2, bias / 2])
    weight = np.zeros((coef.shape[0], x.shape[1]))
    weight[:, columns] = coef
    accuracy = float(np.mean(lda.predict(x[:, columns]) == y))
    return FittedReadout(weight.astype(np.float32), bias.astype(np.float32), len(y), accuracy, name)


def fit_readouts(
    features: np.ndarray,
    subtypes: Sequence[int],
    num_classes: int,
    candidates: Sequence[ReadoutFeatures],
    num_statistics: int,
) -> list[FittedReadout]:
    """One readout per candidate feature set the head has, in the candidates' order (simplest first)."""
    fitted = []
    for name in candidates:
        columns = readout_columns(name, np.shape(features)[1], num_statistics)
        if columns is not None:
            fitted.append(fit_readout(features, subtypes, num_classes, columns, name))
    return fitted


def choose_readout(
    candidates: Sequence[FittedReadout],
    features: np.ndarray,
    subtypes: Sequence[int],
    confidence: float,
) -> FittedReadout:
    """The readout to deploy, from ``candidates`` (simplest first) scored on the validation cases' ``features``.

    The simplest is kept unless a richer one classifies more of these cases right with one-sided
    ``confidence`` (its per-case gain in correct subtypes over the simplest, bootstrapped over the cases, has
    a lower bound above 0); of those that do, the one with the most right. A dozen validation cases rarely
    show that, and then the readout reads the fewest features. The result carries every candidate's numbers.
    """
    y = np.asarray(subtypes, dtype=int)
    right = [(c.logits(features).argmax(1) == y).astype(float) for c in candidates]
    resampler = Resampler(len(y), EVALUATION)
    chosen, rows = 0, []
    for k, candidate in enumerate(candidates):
        gain = right[k] - right[0]
        lower = resampler.lower_bound(gain, confidence) if k else 0.0
        rows.append(
            {
                "features": candidate.features,
                "accuracy": float(right[k].mean()),
                "gain": float(gain.mean()),
                "lower": lower,
            }
        )
        if k and lower > 0 and right[k].sum() > right[chosen].sum():
            chosen = k
    return replace(candidates[chosen], choice=tuple(rows))


def format_readout(fitted: FittedReadout | None, problem: str | None = None, path: str | None = None) -> str:
    if fitted is None:
        return f"subtype readout: the MLP ({problem})"
    path = path or "predict's path"
    read = "every feature" if fitted.features == "all" else "the intensity statistics"
    text = (
        f"subtype readout: shrinkage LDA on {read}, fitted on the head's features of {fitted.num_cases} training "
        f"cases (predicted masks, {path}; accuracy on them {fitted.training_accuracy:.3f})"
    )
    if fitted.choice:
        scored = "; ".join(
            f"{row['features']}: {row['accuracy']:.3f}"
            + (f" (gain {row['gain']:+.3f}, lower bound {row['lower']:+.3f})" if i else "")
            for i, row in enumerate(fitted.choice)
        )
        text += f"; validation accuracy {scored}"
    return text
