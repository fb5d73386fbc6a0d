"""``nnunet-mtl compare``: is prediction B really better than prediction A on the same truth?

Both folders are scored as by ``evaluate``. Per case and metric the difference B - A is taken where both
are defined; the table gives its mean with a bootstrap interval over cases (the same seeded resamples for
every metric), a Wilcoxon signed-rank test (scipy, two-sided; 1.0 where all differences are 0) for the
segmentation metrics, and McNemar's exact test (the binomial test on the discordant cases) for subtype
correctness. The difference of the split-level macro F1 is resampled on the same cases for both folders.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binomtest, wilcoxon

from nnunet_mtl.config import EVALUATION, EvaluationConfig
from nnunet_mtl.data.labels import NUM_SUBTYPES
from nnunet_mtl.errors import InputError
from nnunet_mtl.evaluation import resampled
from nnunet_mtl.evaluation.bootstrap import Resampler
from nnunet_mtl.evaluation.evaluate import evaluate_folder
from nnunet_mtl.evaluation.metrics import macro_f1
from nnunet_mtl.io import check_writable_dir, write_json_atomic, write_text_atomic

# per-case metrics compared: (metrics.json key or derived name, title, higher is better)
SEGMENTATION_METRICS = (
    ("dice_whole_pancreas", "Dice whole pancreas", True),
    ("dice_lesion", "Dice lesion", True),
    ("nsd_whole_pancreas", "NSD whole pancreas", True),
    ("nsd_lesion", "NSD lesion", True),
    ("hd95_whole_pancreas_mm", "HD95 whole pancreas (mm)", False),
    ("hd95_lesion_mm", "HD95 lesion (mm)", False),
    ("volume_abs_error_ml_whole_pancreas", "|volume error| whole pancreas (mL)", False),
    ("volume_abs_error_ml_lesion", "|volume error| lesion (mL)", False),
)


@dataclass
class Comparison:
    pred_a: Path
    pred_b: Path
    truth: Path
    rows: list[dict]
    config: EvaluationConfig

    def to_json(self) -> dict:
        return {
            "pred_a": str(self.pred_a),
            "pred_b": str(self.pred_b),
            "truth": str(self.truth),
            "difference": "B - A, per case where both are defined",
            "bootstrap": {"resamples": self.config.bootstrap_resamples, "seed": self.config.bootstrap_seed},
            "rows": self.rows,
        }


def _value(case: dict, key: str) -> float:
    if key.startswith("volume_abs_error_ml_"):
        region = key.removeprefix("volume_abs_error_ml_")
        return abs(case[f"volume_pred_ml_{region}"] - case[f"volume_true_ml_{region}"])
    value = case[key]
    return math.nan if value is None else float(value)


def _wilcoxon(differences: np.ndarray) -> float | None:
    if len(differences) == 0:
        return None
    if not np.any(differences != 0):
        return 1.0
    return float(wilcoxon(differences).pvalue)


def _row(name: str, title: str, a: np.ndarray, b: np.ndarray, resampler: Resampler, higher_better: bool) -> dict:
    both = ~np.isnan(a) & ~np.isnan(b)
    differences = np.where(both, b - a, np.nan)
    estimate = resampler.mean(list(differences))
    return {
        "metric": name,
        "title": title,
        "higher_is_better": higher_better,
        "mean_a": float(np.mean(a[both])) if both.any() else None,
        "mean_b": float(np.mean(b[both])) if both.any() else None,
        "difference": estimate.to_json(),
        "test": "Wilcoxon signed-rank",
        "p_value": _wilcoxon(differences[both]),
    }


def _subtype_rows(a: list[dict], b: list[dict], resampler: Resampler) -> list[dict]:
    truth = np.array([c["subtype_true"] for c in a])
    pred_a, pred_b = np.array([c["subtype_pred"] for c in a]), np.array([c["subtype_pred"] for c in b])
    correct_a, correct_b = pred_a == truth, pred_b == truth
    only_a, only_b = int(np.sum(correct_a & ~correct_b)), int(np.sum(correct_b & ~correct_a))
    discordant = only_a + only_b
    accuracy = _row("subtype_correct", "subtype correct (accuracy)", correct_a * 1.0, correct_b * 1.0, resampler, True)
    accuracy |= {
        "test": "McNemar (exact)",
        "p_value": 1.0 if discordant == 0 else float(binomtest(only_b, discordant, 0.5).pvalue),
        "discordant": {"only_a_correct": only_a, "only_b_correct": only_b},
    }
    counts_a = resampled.confusion_counts(truth, pred_a, resampler.weights, NUM_SUBTYPES)
    counts_b = resampled.confusion_counts(truth, pred_b, resampler.weights, NUM_SUBTYPES)
    f1_a, f1_b = macro_f1(truth, pred_a), macro_f1(truth, pred_b)
    f1_differences = resampled.macro_f1_of(counts_b) - resampled.macro_f1_of(counts_a)
    f1_row = {
        "metric": "macro_f1",
        "title": "subtype macro F1 (split level)",
        "higher_is_better": True,
        "mean_a": f1_a,
        "mean_b": f1_b,
        "difference": resampler.estimate(f1_b - f1_a, f1_differences).to_json(),
        "test": None,
        "p_value": None,
    }
    return [accuracy, f1_row]


def compare_folders(
    pred_a: Path,
    pred_b: Path,
    truth_dir: Path,
    labels: Path | None = None,
    cases: Sequence[str] | None = None,
    config: EvaluationConfig = EVALUATION,
) -> Comparison:
    a = evaluate_folder(pred_a, truth_dir, labels, cases, config).to_json()
    b = evaluate_folder(pred_b, truth_dir, labels, cases, config).to_json()
    cases_a, cases_b = a["cases"], b["cases"]
    if [c["name"] for c in cases_a] != [c["name"] for c in cases_b]:  # the same truth: cannot happen
        raise InputError(pred_b, "its cases differ from those of the first --pred")
    resampler = Resampler(len(cases_a), config)
    rows = [
        _row(
            key,
            title,
            np.array([_value(c, key) for c in cases_a]),
            np.array([_value(c, key) for c in cases_b]),
            resampler,
            higher,
        )
        for key, title, higher in SEGMENTATION_METRICS
    ]
    if a["classification"] is not None and b["classification"] is not None:
        rows += _subtype_rows(cases_a, cases_b, resampler)
    return Comparison(Path(pred_a), Path(pred_b), Path(truth_dir), rows, config)


def _p(value: float | None) -> str:
    return "-" if value is None else (f"{value:.2g}" if value < 0.01 else f"{value:.3f}")


def _mean(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def comparison_table(comparison: dict) -> tuple[list[str], list[list[str]]]:
    header = ["metric", "A", "B", "B - A [95% CI]", "test", "p"]
    rows = []
    for row in comparison["rows"]:
        difference = row["difference"]
        low, high = difference["ci"]
        interval = "" if low is None else f" [{low:+.4f}, {high:+.4f}]"
        value = "n/a" if difference["value"] is None else f"{difference['value']:+.4f}{interval}"
        rows.append(
            [row["title"], _mean(row["mean_a"]), _mean(row["mean_b"]), value, row["test"] or "-", _p(row["p_value"])]
        )
    return header, rows


def format_comparison(comparison: Comparison) -> str:
    header, rows = comparison_table(comparison.to_json())
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"A = {comparison.pred_a}, B = {comparison.pred_b}, truth {comparison.truth}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def write_comparison(comparison: Comparison, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    check_writable_dir(out_dir)
    values = comparison.to_json()
    header, rows = comparison_table(values)
    markdown = [
        "# Comparison",
        "",
        f"A = `{comparison.pred_a}`, B = `{comparison.pred_b}`, truth `{comparison.truth}`. "
        "Differences are B - A per case where both are defined; intervals: percentile bootstrap over cases "
        f"({comparison.config.bootstrap_resamples} resamples, seed {comparison.config.bootstrap_seed}).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    written = [out_dir / "comparison.json", out_dir / "comparison.md"]
    write_json_atomic(written[0], values)
    write_text_atomic(written[1], "\n".join(markdown) + "\n")
    return written
