"""Files written by ``nnunet-mtl evaluate``: metrics.json, metrics.md, confusion_matrix.png."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay

from nnunet_mtl.evaluation.evaluate import Evaluation, evaluate_folder
from nnunet_mtl.evaluation.metrics import SUBTYPE_LABELS
from nnunet_mtl.io import atomic_path, check_writable_dir, write_text_atomic

REGION_TITLES = {"whole_pancreas": "Whole pancreas Dice", "lesion": "Lesion Dice"}


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def summary_rows(evaluation: Evaluation) -> list[tuple[str, str]]:
    rows = []
    for region, summary in evaluation.regions.items():
        extra = f" ({summary.n_both_empty} both-empty excluded)" if summary.n_both_empty else ""
        rows.append((REGION_TITLES[region], f"{_num(summary.mean_dice)}{extra}"))
    if evaluation.classification is not None:
        rows.append(("Subtype macro F1", _num(evaluation.classification.macro_f1)))
        rows.append(("Subtype accuracy", _num(evaluation.classification.accuracy)))
    else:
        rows.append(("Subtype metrics", f"not computed: {evaluation.classification_note}"))
    return rows


def format_stdout_table(evaluation: Evaluation) -> str:
    rows = [("metric", f"value (n={len(evaluation.cases)})"), *summary_rows(evaluation)]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def format_markdown(evaluation: Evaluation) -> str:
    lines = ["# Evaluation", "", f"{len(evaluation.cases)} cases. {evaluation.to_json()['convention']}", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in summary_rows(evaluation)]
    if evaluation.classification is not None:
        cm = evaluation.classification.confusion_matrix
        lines += ["", "Confusion matrix (rows: true subtype, columns: predicted subtype)", ""]
        lines += [
            "| true \\ pred | " + " | ".join(map(str, SUBTYPE_LABELS)) + " |",
            "|---" * (len(SUBTYPE_LABELS) + 1) + "|",
        ]
        lines += [f"| {k} | " + " | ".join(map(str, row)) + " |" for k, row in zip(SUBTYPE_LABELS, cm)]
    lines += [
        "",
        "## Per case",
        "",
        "| case | whole pancreas Dice | lesion Dice | true subtype | predicted subtype |",
        "|---|---|---|---|---|",
    ]
    for case in evaluation.cases:
        lines.append(
            f"| {case.name} | {_num(case.dice['whole_pancreas'])} | {_num(case.dice['lesion'])} | "
            f"{'' if case.subtype_true is None else case.subtype_true} | "
            f"{'' if case.subtype_pred is None else case.subtype_pred} |"
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


def write_evaluation(evaluation: Evaluation, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    written = [out_dir / "metrics.json", out_dir / "metrics.md"]
    write_text_atomic(written[0], json.dumps(evaluation.to_json(), indent=2) + "\n")
    write_text_atomic(written[1], format_markdown(evaluation))
    if evaluation.classification is not None:
        written.append(out_dir / "confusion_matrix.png")
        save_confusion_png(evaluation.to_json()["classification"], written[-1])
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
