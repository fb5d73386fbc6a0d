"""Summaries over cases, each with its bootstrap interval (all on the same resamples): per region (Dice,
NSD, HD95, volume difference), for the subtype labels (macro F1, accuracy, balanced accuracy, MCC, F1 per
subtype) and for the subtype probabilities (ROC AUC, log loss, Brier score, ECE)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from nnunet_mtl.evaluation import resampled
from nnunet_mtl.evaluation.bootstrap import Resampler
from nnunet_mtl.evaluation.calibration import probability_metrics
from nnunet_mtl.evaluation.metrics import SUBTYPE_LABELS, ClassificationSummary
from nnunet_mtl.evaluation.surface import SurfaceMetrics


def region_section(dice: Sequence[float], surface: Sequence[SurfaceMetrics], resampler: Resampler) -> dict:
    config = resampler.config
    hd = [s.hd for s in surface]
    defined_hd = [v for v in hd if not math.isnan(v)]
    difference = [s.volume_difference_ml for s in surface]
    return {
        "dice": resampler.mean(dice).to_json(),
        "nsd": {"tolerance_mm": config.nsd_tolerance_mm, **resampler.mean([s.nsd for s in surface]).to_json()},
        "hd95_mm": {
            "percentile": config.hd_percentile,
            **resampler.mean(hd).to_json(),
            "median": float(np.median(defined_hd)) if defined_hd else None,
            "n_undefined": len(hd) - len(defined_hd),
        },
        "volume_difference_ml": resampler.mean(difference).to_json(),
        "volume_abs_difference_ml": resampler.mean([abs(d) for d in difference]).to_json(),
    }


def label_intervals(
    truth: Sequence[int], prediction: Sequence[int], summary: ClassificationSummary, resampler: Resampler
) -> dict:
    """The intervals of ``summary``'s values (scikit-learn's) from the same statistics on each resample."""
    counts = resampled.confusion_counts(truth, prediction, resampler.weights, len(SUBTYPE_LABELS))
    f1 = resampled.f1_per_class_of(counts)
    estimates = {
        "macro_f1": resampler.estimate(summary.macro_f1, resampled.macro_f1_of(counts)),
        "accuracy": resampler.estimate(summary.accuracy, resampled.accuracy_of(counts)),
        "balanced_accuracy": resampler.estimate(summary.balanced_accuracy, resampled.balanced_accuracy_of(counts)),
        "mcc": resampler.estimate(summary.mcc, resampled.mcc_of(counts)),
    }
    estimates |= {f"f1_subtype{k}": resampler.estimate(summary.f1_per_class[k], f1[:, k]) for k in SUBTYPE_LABELS}
    return {name: estimate.to_json() for name, estimate in estimates.items()}


def probability_section(truth: Sequence[int], probabilities: Sequence[Sequence[float]], resampler: Resampler) -> dict:
    bins = resampler.config.calibration_bins
    metrics = probability_metrics(truth, probabilities, bins)
    weights = resampler.weights
    intervals = {
        "roc_auc_ovr": resampler.estimate(metrics.roc_auc_ovr, resampled.roc_auc_of(truth, probabilities, weights)),
        "log_loss": resampler.estimate(
            metrics.log_loss, resampler.means(resampled.per_case_log_loss(truth, probabilities))
        ),
        "brier": resampler.estimate(metrics.brier, resampler.means(resampled.per_case_brier(truth, probabilities))),
        "ece": resampler.estimate(metrics.ece, resampled.ece_of(truth, probabilities, weights, bins)),
    }
    return {
        **metrics.to_json(),
        "calibration_bins": bins,
        "intervals": {name: estimate.to_json() for name, estimate in intervals.items()},
    }
