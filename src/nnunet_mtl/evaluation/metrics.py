"""Metric definitions.

Dice convention: when truth and prediction are both empty for a region, Dice is undefined. It is
reported as ``null`` and left out of the mean (the mean is over the cases where it is defined), exactly as
nnU-Net's own evaluation does; the number of such cases is reported next to the mean. A region present
in only one of the two scores 0.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_recall_fscore_support,
)

from nnunet_mtl.data.labels import NUM_SUBTYPES, REGIONS, region_mask

SUBTYPE_LABELS = list(range(NUM_SUBTYPES))


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty."""
    tp = np.count_nonzero(prediction & truth)
    fp_fn = np.count_nonzero(prediction ^ truth)
    if tp + fp_fn == 0:
        return math.nan
    return 2 * tp / (2 * tp + fp_fn)


def region_dice(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice per region (whole pancreas {1,2}, lesion {2}) for two integer label maps."""
    return {region: dice(region_mask(prediction, region), region_mask(truth, region)) for region in REGIONS}


@dataclass(frozen=True)
class RegionSummary:
    mean_dice: float | None  # None when no case has the region defined
    n_scored: int
    n_both_empty: int


def summarize_region(values: list[float]) -> RegionSummary:
    defined = [v for v in values if not math.isnan(v)]
    return RegionSummary(
        mean_dice=float(np.mean(defined)) if defined else None,
        n_scored=len(defined),
        n_both_empty=len(values) - len(defined),
    )


@dataclass(frozen=True)
class ClassificationSummary:
    macro_f1: float
    accuracy: float
    f1_per_class: list[float]
    confusion_matrix: list[list[int]]  # rows: true subtype, columns: predicted subtype
    n: int
    precision_per_class: list[float]
    recall_per_class: list[float]
    balanced_accuracy: float  # mean recall over the subtypes present in truth
    mcc: float  # Matthews correlation, multiclass


def macro_f1(truth, prediction) -> float:
    """Macro F1 as scikit-learn defines it: the mean over the subtypes present in truth or prediction."""
    return float(f1_score(truth, prediction, average="macro", zero_division=0))


def balanced_accuracy(truth, prediction) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a predicted subtype absent from the truth
        return float(balanced_accuracy_score(truth, prediction))


def mcc(truth, prediction) -> float:
    return float(matthews_corrcoef(truth, prediction))


def classification_summary(truth: list[int], prediction: list[int]) -> ClassificationSummary:
    precision, recall, per_class, _ = precision_recall_fscore_support(
        truth, prediction, labels=SUBTYPE_LABELS, zero_division=0
    )
    return ClassificationSummary(
        macro_f1=macro_f1(truth, prediction),
        accuracy=float(accuracy_score(truth, prediction)),
        f1_per_class=[float(v) for v in per_class],
        confusion_matrix=confusion_matrix(truth, prediction, labels=SUBTYPE_LABELS).tolist(),
        n=len(truth),
        precision_per_class=[float(v) for v in precision],
        recall_per_class=[float(v) for v in recall],
        balanced_accuracy=balanced_accuracy(truth, prediction),
        mcc=mcc(truth, prediction),
    )
