"""Files written by ``nnunet-mtl evaluate``: metrics.json, metrics.md, confusion_matrix.png."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay

from nnunet_mtl.evaluation.evaluate import Evaluation, evaluate_folder
from nnunet_mtl.evaluation.metrics import SUBTYPE_LABELS
from nnunet_mtl.io import atomic_path, check_writable_dir, write_json_atomic, write_text_atomic

REGION_TITLES = {"whole_pancreas": "Whole pancreas", "lesion": "Lesion"}
PROBABILITY_ROWS = (
    ("roc_auc_ovr", "ROC AUC (one-vs-rest)"),
    ("log_loss", "log loss"),
    ("brier", "Brier"),
    ("ece", "ECE"),
)


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def with_interval(estimate: dict, digits: int = 4) -> str:
    """``0.9463 [0.931, 0.958]`` from an estimate's JSON (value, ci, n)."""
    low, high = estimate["ci"]
    interval = "" if low is None else f" [{low:.{max(digits - 1, 1)}f}, {high:.{max(digits - 1, 1)}f}]"
    return _num(estimate["value"], digits) + interval


def summary_rows(metrics: dict) -> list[tuple[str, str]]:
    """(metric, value [95% interval]) of a metrics.json."""
    rows = []
    for region, section in metrics["segmentation"].items():
        title = REGION_TITLES[region]
        extra = f" ({section['n_both_empty']} both-empty excluded)" if section["n_both_empty"] else ""
        rows.append((f"{title} Dice", with_interval(section["dice"]) + extra))
        rows.append((f"{title} NSD at {section['nsd']['tolerance_mm']:g} mm", with_interval(section["nsd"])))
        hd = section["hd95_mm"]
        undefined = f" ({hd['n_undefined']} undefined)" if hd["n_undefined"] else ""
        rows.append((f"{title} HD{hd['percentile']:g} (mm)", with_interval(hd, 2) + undefined))
        rows.append((f"{title} volume difference (mL)", with_interval(section["volume_difference_ml"], 3)))
    detection = metrics["detection"]
    for key in ("sensitivity", "specificity"):
        rows.append((f"Lesion detection {key} (n={detection[key]['n']})", with_interval(detection[key], 3)))
    classification = metrics.get("classification")
    if classification is None:
        rows.append(("Subtype metrics", f"not computed: {metrics.get('classification_note')}"))
        return rows
    intervals = classification["intervals"]
    for key, title in (("macro_f1", "macro F1"), ("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy")):
        rows.append((f"Subtype {title}", with_interval(intervals[key])))
    rows.append(("Subtype MCC", with_interval(intervals["mcc"])))
    for source, label in (("probabilities", ""), ("probabilities_uncalibrated", ", uncalibrated")):
        section = metrics.get(source)
        for key, title in PROBABILITY_ROWS if section is not None else ():
            rows.append((f"Subtype {title}{label}", with_interval(section["intervals"][key])))
    return rows


def format_stdout_table(metrics: dict) -> str:
    rows = [("metric", f"value [95% CI] (n={metrics['num_cases']})"), *summary_rows(metrics)]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def format_markdown(metrics: dict) -> str:
    bootstrap = metrics["bootstrap"]
    lines = ["# Evaluation", "", f"{metrics['num_cases']} cases. {metrics['convention']}", ""]
    lines += [
        f"Intervals: {bootstrap['confidence_level']:.0%} percentile bootstrap over cases, "
        f"{bootstrap['resamples']} resamples, seed {bootstrap['seed']}.",
        "",
    ]
    lines += ["| metric | value [95% CI] |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in summary_rows(metrics)]
    detection = metrics["detection"]
    lines += [
        "",
        f"Lesion present from {detection['min_volume_mm3']:g} mm3. Missed lesions: "
        f"{', '.join(detection['missed']) or 'none'}; false alarms: {', '.join(detection['false_alarms']) or 'none'}.",
    ]
    classification = metrics.get("classification")
    if classification is not None:
        lines += ["", "| subtype | precision | recall | F1 |", "|---|---|---|---|"]
        for k in SUBTYPE_LABELS:
            lines.append(
                f"| {k} | {_num(classification['precision_per_class'][k])} | "
                f"{_num(classification['recall_per_class'][k])} | "
                f"{with_interval(classification['intervals'][f'f1_subtype{k}'])} |"
            )
        cm = classification["confusion_matrix"]
        lines += ["", "Confusion matrix (rows: true subtype, columns: predicted subtype)", ""]
        lines += [
            "| true \\ pred | " + " | ".join(map(str, SUBTYPE_LABELS)) + " |",
            "|---" * (len(SUBTYPE_LABELS) + 1) + "|",
        ]
        lines += [f"| {k} | " + " | ".join(map(str, row)) + " |" for k, row in zip(SUBTYPE_LABELS, cm)]
    lines += ["", "## Conventions", ""] + [f"- {name}: {text}" for name, text in metrics["conventions"].items()]
    lines += [
        "",
        "## Per case",
        "",
        "| case | Dice whole | Dice lesion | NSD whole | NSD lesion | HD95 whole (mm) | HD95 lesion (mm) "
        "| lesion found | true subtype | predicted subtype |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in metrics["cases"]:
        found = "" if not case["lesion_present_true"] else ("yes" if case["lesion_present_pred"] else "missed")
        lines.append(
            f"| {case['name']} | {_num(case['dice_whole_pancreas'])} | {_num(case['dice_lesion'])} | "
            f"{_num(case['nsd_whole_pancreas'])} | {_num(case['nsd_lesion'])} | "
            f"{_num(case['hd95_whole_pancreas_mm'], 2)} | {_num(case['hd95_lesion_mm'], 2)} | {found} | "
            f"{'' if case['subtype_true'] is None else case['subtype_true']} | "
            f"{'' if case['subtype_pred'] is None else case['subtype_pred']} |"
        )
    return "\n".join(lines) + "\n"


def save_confusion_png(classification: dict, path: Path) -> None:
    """``classification``: the ``classification`` entry of metrics.json."""
    figure, axis = plt.subplots(figsize=(4.2, 3.8), dpi=120)
    ConfusionMatrixDisplay(np.array(classification["confusion_matrix"]), display_labels=SUBTYPE_LABELS).plot(
        ax=axis, cmap="Blues", colorbar=False
    )
    axis.set_xlabel("predicted subtype")
    axis.set_ylabel("true subtype")
    axis.set_title(f"macro F1 {classification['macro_f1']:.3f}, n={classification['n']}")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def save_reliability_png(metrics: dict, path: Path) -> None:
    """Reliability diagram of the subtype probabilities (and of the uncalibrated ones, where present)."""
    figure, axis = plt.subplots(figsize=(4.6, 4.0), dpi=120)
    axis.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1, label="perfect calibration")
    both = metrics.get("probabilities_uncalibrated") is not None
    for source, label, colour in (
        ("probabilities_uncalibrated", "uncalibrated", "#d62728"),
        ("probabilities", "calibrated" if both else "as predicted", "#1f77b4"),
    ):
        section = metrics.get(source)
        if section is None:
            continue
        bins = section["reliability"]
        points = [(p, a, c) for p, a, c in zip(bins["confidence"], bins["accuracy"], bins["count"]) if c > 0]
        axis.plot(
            [p for p, _, _ in points],
            [a for _, a, _ in points],
            marker="o",
            color=colour,
            label=f"{label}: ECE {section['ece']:.3f}",
        )
        for p, a, c in points:
            axis.annotate(str(c), (p, a), textcoords="offset points", xytext=(3, -10), fontsize=7, color=colour)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("confidence (probability of the predicted subtype)")
    axis.set_ylabel("accuracy")
    axis.set_title(f"reliability, {metrics['num_cases']} cases (numbers: cases per bin)", fontsize=9)
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def write_evaluation(evaluation: Evaluation, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    metrics = evaluation.to_json()
    written = [out_dir / "metrics.json", out_dir / "metrics.md"]
    write_json_atomic(written[0], metrics)
    write_text_atomic(written[1], format_markdown(metrics))
    if metrics["classification"] is not None:
        written.append(out_dir / "confusion_matrix.png")
        save_confusion_png(metrics["classification"], written[-1])
    if metrics["probabilities"] is not None:
        written.append(out_dir / "reliability.png")
        save_reliability_png(metrics, written[-1])
    return written


def evaluate_to_folder(
    pred_dir: Path, truth_dir: Path, labels: Path | None = None, out_dir: Path | None = None
) -> tuple[Evaluation, list[Path]]:
    """``nnunet-mtl evaluate``: score ``pred_dir`` and write the results to ``out_dir`` (default
    ``PRED/evaluation``)."""
    out_dir = Path(out_dir or Path(pred_dir) / "evaluation")
    evaluation = evaluate_folder(pred_dir, truth_dir, labels)
    check_writable_dir(out_dir)
    return evaluation, write_evaluation(evaluation, out_dir)
