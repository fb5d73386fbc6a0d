"""Summary metrics on bootstrap resamples, as weighted sums over cases (one row of ``weights`` per resample,
see ``evaluation/bootstrap.py``). Each follows scikit-learn's (or MONAI's) definition exactly, which the tests
check with unit weights against the library: zero_division=0 for precision, recall and F1; macro F1 over
the subtypes present in truth or prediction; balanced accuracy over those present in the truth; the
multiclass Matthews correlation (0 where undefined); macro one-vs-rest ROC AUC with ties counted half;
top-label ECE binned as MONAI's ``calibration_binning``.
"""

from __future__ import annotations

import numpy as np
import torch

from nnunet_mtl.evaluation.calibration import normalised

Weights = np.ndarray  # (resamples, cases), integer counts


def confusion_counts(truth, prediction, weights: Weights, num_classes: int) -> np.ndarray:
    """(resamples, true class, predicted class) counts."""
    index = np.asarray(truth) * num_classes + np.asarray(prediction)
    onehot = np.eye(num_classes * num_classes)[index]
    return (weights @ onehot).reshape(len(weights), num_classes, num_classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 0.0)


def accuracy_of(counts: np.ndarray) -> np.ndarray:
    return np.trace(counts, axis1=1, axis2=2) / counts.sum(axis=(1, 2))


def f1_per_class_of(counts: np.ndarray) -> np.ndarray:
    tp = np.diagonal(counts, axis1=1, axis2=2)
    return _ratio(2 * tp, counts.sum(axis=1) + counts.sum(axis=2))


def macro_f1_of(counts: np.ndarray) -> np.ndarray:
    present = (counts.sum(axis=1) + counts.sum(axis=2)) > 0
    return (f1_per_class_of(counts) * present).sum(axis=1) / present.sum(axis=1)


def balanced_accuracy_of(counts: np.ndarray) -> np.ndarray:
    true_totals = counts.sum(axis=2)
    present = true_totals > 0
    recall = _ratio(np.diagonal(counts, axis1=1, axis2=2), true_totals)
    return (recall * present).sum(axis=1) / present.sum(axis=1)


def mcc_of(counts: np.ndarray) -> np.ndarray:
    true_totals, pred_totals = counts.sum(axis=2), counts.sum(axis=1)
    correct, total = np.trace(counts, axis1=1, axis2=2), counts.sum(axis=(1, 2))
    covariance = correct * total - (true_totals * pred_totals).sum(axis=1)
    variance_true = total**2 - (true_totals**2).sum(axis=1)
    variance_pred = total**2 - (pred_totals**2).sum(axis=1)
    return _ratio(covariance, np.sqrt(variance_true * variance_pred))


def rate_of(truth, prediction, weights: Weights, positive: bool) -> np.ndarray:
    """Sensitivity (``positive``) or specificity of boolean per-case values; NaN without such cases."""
    truth, prediction = np.asarray(truth, dtype=bool), np.asarray(prediction, dtype=bool)
    kind = truth if positive else ~truth
    hits = kind & (prediction if positive else ~prediction)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ hits) / (weights @ kind)


def per_case_log_loss(truth, probabilities) -> np.ndarray:
    probabilities = normalised(probabilities)
    eps = np.finfo(probabilities.dtype).eps
    return -np.log(np.clip(probabilities[np.arange(len(probabilities)), np.asarray(truth)], eps, 1 - eps))


def per_case_brier(truth, probabilities) -> np.ndarray:
    probabilities = normalised(probabilities)
    onehot = np.eye(probabilities.shape[1])[np.asarray(truth)]
    return ((probabilities - onehot) ** 2).sum(axis=1)


def ece_of(truth, probabilities, weights: Weights, bins: int) -> np.ndarray:
    probabilities = normalised(probabilities)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == np.asarray(truth)).astype(float)
    boundaries = torch.linspace(0.0, 1.0 + torch.finfo(torch.float32).eps, bins + 1)
    confidence_32 = torch.tensor(confidence, dtype=torch.float32)
    bin_index = torch.bucketize(confidence_32, boundaries[1:]).clamp(max=bins - 1).numpy()
    gaps = weights @ (np.eye(bins)[bin_index] * (confidence_32.numpy() - correct)[:, None])
    return np.abs(gaps).sum(axis=1) / weights.sum(axis=1)


def roc_auc_of(truth, probabilities, weights: Weights) -> np.ndarray:
    """Macro one-vs-rest ROC AUC per resample; NaN where a resample lacks a class or its complement."""
    probabilities, truth = normalised(probabilities), np.asarray(truth)
    per_class = []
    for k in range(probabilities.shape[1]):
        positive = truth == k
        score = probabilities[:, k]
        wins = (score[:, None] > score[None, :]) + 0.5 * (score[:, None] == score[None, :])
        wins = wins * positive[:, None] * ~positive[None, :]
        pairs = (weights @ positive) * (weights @ ~positive)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class.append((weights * (weights @ wins.T)).sum(axis=1) / pairs)
    return np.mean(per_class, axis=0)
