"""The report's tables, computed once and rendered both as HTML and as Markdown."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from nnunet_mtl.config import TARGETS
from nnunet_mtl.evaluation.outputs import summary_rows
from nnunet_mtl.report.sources import ReportSources
from nnunet_mtl.training.inference_choice import VERDICTS

NOT_AVAILABLE = "n/a"


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_AVAILABLE
    return f"{value:.{digits}f}"


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)  # per column: sort as numbers


def _interval(ci: list | None) -> str:
    return "-" if not ci or ci[0] is None else f"{ci[0]:.3f}-{ci[1]:.3f}"


def metrics_table(metrics: dict) -> Table:
    segmentation = metrics["segmentation"]
    classification = metrics.get("classification") or {}
    intervals = classification.get("intervals", {})
    rows = []
    for name, achieved, ci, target, peers in (
        (
            "Whole pancreas Dice",
            segmentation["whole_pancreas"]["mean_dice"],
            segmentation["whole_pancreas"].get("mean_dice_ci"),
            TARGETS.dice_whole,
            TARGETS.peers_dice_whole,
        ),
        (
            "Lesion Dice",
            segmentation["lesion"]["mean_dice"],
            segmentation["lesion"].get("mean_dice_ci"),
            TARGETS.dice_lesion,
            TARGETS.peers_dice_lesion,
        ),
        (
            "Subtype macro F1",
            classification.get("macro_f1"),
            intervals.get("macro_f1", {}).get("ci"),
            TARGETS.macro_f1,
            TARGETS.peers_macro_f1,
        ),
        ("Subtype accuracy", classification.get("accuracy"), intervals.get("accuracy", {}).get("ci"), None, None),
    ):
        met = "-" if target is None or achieved is None else ("yes" if achieved >= target else "no")
        rows.append(
            [
                name,
                "-" if target is None else f">= {target:.2f}",
                fmt(achieved),
                _interval(ci),
                met,
                "-" if peers is None else f"{peers[0]:.2f}-{peers[1]:.2f}",
            ]
        )
    header = ["metric", "target", "achieved", "95% CI", "target met", "seed and peers (real validation set)"]
    return Table(header, rows, [False] * len(header))


def all_metrics_table(metrics: dict) -> Table:
    """Every summary metric of ``evaluate`` with its interval."""
    return Table(["metric", "value [95% CI]"], [[name, value] for name, value in summary_rows(metrics)])


def mask_steps_table(determined_on: dict) -> Table:
    rows = []
    for step in determined_on.get("mask_steps", []):
        before, after = step["mean_dice_before"], step["mean_dice_after"]
        rows.append(
            [
                step["step"],
                "kept" if step["kept"] else "not kept",
                f"{fmt(before['whole_pancreas'])} -> {fmt(after['whole_pancreas'])}",
                f"{fmt(before['lesion'])} -> {fmt(after['lesion'])}",
            ]
        )
    return Table(["step", "decision", "validation Dice whole", "validation Dice lesion"], rows)


def lesion_threshold_table(determined_on: dict) -> Table:
    rows = [
        [
            f"{row['threshold']:g}",
            "chosen" if row["chosen"] else "",
            fmt(row["lesion_dice"]),
            f"{row['gain']:+.4f}",
            f"{row['lower']:+.4f}",
        ]
        for row in determined_on.get("lesion_threshold") or []
    ]
    return Table(
        ["lesion threshold", "decision", "validation lesion Dice", "gain over 0.5", "one-sided lower bound"], rows
    )


def inference_choice_table(determined_on: dict) -> Table:
    rows = [
        [
            c["name"],
            fmt(c["dice"]["whole_pancreas"]),
            fmt(c["dice"]["lesion"]),
            f"{c['correct']}/{c['cases']}",
            f"{c['forward_passes_per_case']:.1f}",
            f"{c['forward_seconds_per_case']:.2f}",
            ", ".join(f"{path} {count}" for path, count in sorted(c.get("paths", {}).items())),
            VERDICTS[c["meets_reference"]],
        ]
        for c in determined_on.get("candidates", [])
    ]
    header = ["inference", "Dice whole", "Dice lesion", "subtype right", "passes/case", "forward s/case"]
    return Table([*header, "cases per path", "verdict"], rows)


def case_score(case: dict) -> float:
    """Mean of the case's defined Dice values (whole pancreas, lesion); the order of the per-case table."""
    values = [v for v in (case.get("dice_whole_pancreas"), case.get("dice_lesion")) if v is not None]
    return sum(values) / len(values) if values else -1.0


def ranked_cases(metrics: dict) -> list[dict]:
    return sorted(metrics["cases"], key=case_score, reverse=True)


def cases_table(sources: ReportSources) -> Table:
    rows = []
    for case in ranked_cases(sources.metrics):
        probabilities = sources.probabilities.get(case["name"])
        predicted, true = case.get("subtype_pred"), case.get("subtype_true")

        def probability(k: int | None, probabilities=probabilities) -> str:
            return NOT_AVAILABLE if probabilities is None or k is None else fmt(probabilities[k], 3)

        found = ""
        if case.get("lesion_present_true") is not None:
            truth_has, pred_has = case["lesion_present_true"], case["lesion_present_pred"]
            found = {(True, True): "yes", (True, False): "missed", (False, True): "false alarm"}.get(
                (truth_has, pred_has), "-"
            )
        rows.append(
            [
                case["name"],
                fmt(case.get("dice_whole_pancreas")),
                fmt(case.get("dice_lesion")),
                fmt(case.get("nsd_whole_pancreas")),
                fmt(case.get("nsd_lesion")),
                fmt(case.get("hd95_whole_pancreas_mm"), 2),
                fmt(case.get("hd95_lesion_mm"), 2),
                found,
                "" if true is None else str(true),
                "" if predicted is None else str(predicted),
                probability(predicted),
                probability(true),
            ]
        )
    header = [
        "case",
        "Dice whole pancreas",
        "Dice lesion",
        "NSD whole",
        "NSD lesion",
        "HD95 whole (mm)",
        "HD95 lesion (mm)",
        "lesion found",
        "true subtype",
        "predicted subtype",
        "p(predicted)",
        "p(true)",
    ]
    numeric = [False, True, True, True, True, True, True, False, True, True, True, True]
    return Table(header, rows, numeric)


def run_facts(sources: ReportSources) -> list[tuple[str, str]]:
    run = sources.run
    loss = run.config.get("loss", {})
    facts = [
        ("model folder", str(sources.model_dir)),
        ("trainer, fold", f"{run.trainer}, fold {run.fold}"),
        ("epochs trained", f"{run.epochs}" + ("" if run.finished else " (training not finished)")),
        ("phase 1 (head on a detached bottleneck)", f"epochs 0-{loss.get('phase1_epochs', 0) - 1}"),
        ("selected checkpoint (checkpoint_best)", "none" if run.best_epoch is None else f"epoch {run.best_epoch}"),
        (
            "subtype readout",
            "the head's MLP"
            if not run.readout_fitted
            else "shrinkage LDA fitted on the training split's predicted pooling, reading "
            + ("the intensity statistics only" if run.readout_reads_statistics_only else "every feature"),
        ),
        ("metrics from", sources.metrics_origin),
        ("cases", str(sources.metrics["num_cases"])),
    ]
    note = sources.metrics.get("classification_note")
    if note:
        facts.append(("subtype metrics", note))
    return facts
