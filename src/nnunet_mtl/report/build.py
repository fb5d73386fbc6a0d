"""``nnunet-mtl report``: report.html (self-contained), report.md, metrics.json and the PNGs, in one folder.

Metrics come from scoring ``--pred`` against ``--truth`` (exactly as ``nnunet-mtl evaluate``), or, without
them, from the model's final whole-volume validation (``fold_K/validation/metrics.json``). The folder is
built under a temporary name and renamed into place, so a failure leaves no half-written report.
"""

from __future__ import annotations

import json
from pathlib import Path

from nnunet_mtl.errors import InputError
from nnunet_mtl.evaluation.outputs import save_confusion_png, save_reliability_png
from nnunet_mtl.inference.choice import read_inference_choice
from nnunet_mtl.io import NIFTI_SUFFIX, check_staged_output_dir, staged_directory, write_json_atomic, write_text_atomic
from nnunet_mtl.postprocessing.plan import read_postprocessing
from nnunet_mtl.report.content import (
    Table,
    all_metrics_table,
    cases_table,
    inference_choice_table,
    lesion_threshold_table,
    mask_steps_table,
    metrics_table,
    ranked_cases,
    run_facts,
)
from nnunet_mtl.report.figures import save_overlay
from nnunet_mtl.report.render import Figure, Section, render_html, render_markdown
from nnunet_mtl.report.sources import (
    VALIDATION_FOLDER,
    CaseFiles,
    ReportSources,
    index_images,
    index_masks,
    load_training_run,
    read_benchmark,
    read_probabilities,
)
from nnunet_mtl.report.viewer import select_cases, viewer_html
from nnunet_mtl.training.progress import plot_training_curves

REPORT_FILE = "report.html"
OVERLAYS_PER_END = 2  # best and worst cases shown


def collect_sources(
    model_dir: Path,
    fold: int | None = None,
    pred_dir: Path | None = None,
    truth_dir: Path | None = None,
    labels: Path | None = None,
    images_dir: Path | None = None,
    benchmark: Path | None = None,
) -> ReportSources:
    if (pred_dir is None) != (truth_dir is None):
        raise InputError(pred_dir or truth_dir, "--pred and --truth go together")
    if images_dir is not None and not Path(images_dir).is_dir():
        raise InputError(images_dir, "images folder not found")
    run = load_training_run(model_dir, fold)
    benchmark_results = read_benchmark(benchmark)
    if pred_dir is not None:
        from nnunet_mtl.evaluation.evaluate import evaluate_folder

        metrics = evaluate_folder(pred_dir, truth_dir, labels).to_json()
        origin = f"predictions in {pred_dir} scored against {truth_dir} (as `nnunet-mtl evaluate`)"
        truth_masks, images = index_masks(truth_dir), index_images(images_dir or truth_dir)
    else:
        pred_dir = Path(model_dir) / f"fold_{run.fold}" / VALIDATION_FOLDER
        metrics_path = pred_dir / "metrics.json"
        if not metrics_path.is_file():
            raise InputError(metrics_path, "no final validation metrics; give --pred and --truth")
        metrics = json.loads(metrics_path.read_text())
        origin = f"final whole-volume validation of checkpoint_best, fold {run.fold} ({metrics_path})"
        raw = _raw_dataset_folder(Path(model_dir))
        truth_masks = index_masks(raw / "labelsTr") if raw else {}
        images = index_images(images_dir or (raw / "imagesTr" if raw else None))
    files = {}
    for case in metrics["cases"]:
        prediction = Path(pred_dir) / f"{case['name']}{NIFTI_SUFFIX}"
        files[case["name"]] = CaseFiles(
            prediction if prediction.is_file() else None, truth_masks.get(case["name"]), images.get(case["name"])
        )
    return ReportSources(
        Path(model_dir),
        run,
        metrics,
        origin,
        read_probabilities(Path(pred_dir)),
        files,
        benchmark_results,
        read_postprocessing(Path(model_dir)),
        read_inference_choice(Path(model_dir), [run.fold]),
    )


def _raw_dataset_folder(model_dir: Path) -> Path | None:
    """``$nnUNet_raw/DatasetNNN_NAME`` of a model folder ``.../DatasetNNN_NAME/<trainer>__<plans>__<config>``."""
    from nnunet_mtl.paths import ensure_nnunet_env

    folder = ensure_nnunet_env(announce=False).raw / model_dir.resolve().parent.name
    return folder if folder.is_dir() else None


def _overlay_section(sources: ReportSources, out: Path) -> Section:
    ranked = [c for c in ranked_cases(sources.metrics) if None not in vars(sources.files[c["name"]]).values()]
    best = ranked[:OVERLAYS_PER_END]
    worst = [c for c in ranked[::-1][:OVERLAYS_PER_END] if c not in best]
    figures = []
    for kind, case in [("best", c) for c in best] + [("worst", c) for c in worst]:
        files = sources.files[case["name"]]
        title = (
            f"{kind}: {case['name']}: Dice whole {case.get('dice_whole_pancreas') or 0:.3f}, "
            f"lesion {case.get('dice_lesion') or 0:.3f}, subtype true {case.get('subtype_true')} / "
            f"predicted {case.get('subtype_pred')}"
        )
        path = out / f"overlay_{kind}_{case['name']}.png"
        save_overlay(files.image, files.truth, files.prediction, title, path)
        figures.append(Figure(path, title))
    notes = [] if figures else ["no case has its image, truth mask and prediction at hand (give --images DIR)"]
    return Section("overlays", [], figures, notes)


def _evaluation_section(metrics: dict) -> Section:
    if "detection" not in metrics:
        return Section("evaluation", [], [], ["metrics.json of an earlier version: Dice and subtype metrics only"])
    detection, bootstrap = metrics["detection"], metrics["bootstrap"]
    notes = [
        f"{bootstrap['confidence_level']:.0%} percentile bootstrap intervals over cases ({bootstrap['resamples']} "
        f"resamples, seed {bootstrap['seed']}).",
        f"A lesion counts as present from {detection['min_volume_mm3']:g} mm3. Missed lesions: "
        f"{', '.join(detection['missed']) or 'none'}; false alarms: {', '.join(detection['false_alarms']) or 'none'}.",
        *(f"{name}: {text}" for name, text in metrics["conventions"].items()),
    ]
    return Section("evaluation", [all_metrics_table(metrics)], [], notes)


def _calibration_section(sources: ReportSources, out: Path) -> Section:
    metrics, post = sources.metrics, sources.postprocessing
    notes = []
    if post.is_identity:
        notes.append("the model folder has no subtype temperature (`nnunet-mtl postprocess` determines one)")
    else:
        fit = post.determined_on.get("temperature", {})
        notes.append(
            f"temperature {post.temperature:.3f}, fitted on {post.determined_on.get('cases')} validation cases "
            f"(there: log loss {fit.get('log_loss_before', 0):.4f} -> {fit.get('log_loss_after', 0):.4f}, "
            f"ECE {fit.get('ece_before', 0):.4f} -> {fit.get('ece_after', 0):.4f})."
        )
    figures = []
    if metrics.get("probabilities") is not None:
        if metrics.get("probabilities_uncalibrated") is not None:
            before, after = metrics["probabilities_uncalibrated"], metrics["probabilities"]
            notes.append(
                f"On these {metrics['num_cases']} cases: ECE {before['ece']:.4f} uncalibrated -> {after['ece']:.4f} "
                f"calibrated; log loss {before['log_loss']:.4f} -> {after['log_loss']:.4f}; Brier "
                f"{before['brier']:.4f} -> {after['brier']:.4f} (the subtypes are the same)."
            )
        path = out / "reliability.png"
        save_reliability_png(metrics, path)
        figures.append(Figure(path, "reliability of the subtype probabilities: accuracy against confidence"))
    else:
        notes.append("no subtype probabilities to assess")
    return Section("calibration", [], figures, notes)


def _postprocessing_section(sources: ReportSources) -> Section:
    post = sources.postprocessing
    if not post.determined_on:
        return Section("postprocessing", [], [], ["no postprocessing determined for this model folder"])
    notes = [
        f"determined on {post.determined_on['cases']} validation cases ({post.determined_on['source']}); "
        f"applied by `predict`: lesion threshold {post.lesion_threshold:g}, "
        f"{', '.join(post.mask_steps) or 'no mask step'}. A lesion threshold is kept when its per-case lesion Dice "
        "gain over 0.5 is positive with one-sided confidence (the bootstrap over the validation cases); a step when "
        "it raises the mean Dice over the regions and lowers none (nnU-Net's rule)."
    ]
    tables = [mask_steps_table(post.determined_on)]
    if post.determined_on.get("lesion_threshold"):
        tables.insert(0, lesion_threshold_table(post.determined_on))
    return Section("postprocessing", tables, [], notes)


def _inference_section(sources: ReportSources) -> Section:
    choice = sources.inference_choice
    info = choice.determined_on
    if not info:
        return Section("inference", [], [], [f"no inference choice in the model folder: `predict` runs {choice.name}"])
    notes = [
        f"chosen on {info['cases']} validation cases ({info['source']}) and run by `predict`: {choice.name}, "
        f"the cheapest candidate whose mean Dice of each region is at most {info['dice_tolerance']:g} below "
        f"{info['reference']}'s (stock nnU-Net's inference) and which classifies at most {info['subtype_cases']} "
        "case(s) fewer right; candidates cheaper than the choice failed, dearer ones were not run. A region empty "
        "in truth and prediction counts as Dice 1 here."
    ]
    return Section("inference", [inference_choice_table(info)], [], notes)


def _viewer_section(sources: ReportSources) -> Section:
    ranked = ranked_cases(sources.metrics)
    content = select_cases(ranked, sources.files)
    if not content.cases:
        return Section("viewer", [], [], ["no case has its image and prediction at hand (give --images DIR)"])
    notes = [*content.notes(), "interactive in report.html only"]
    return Section("viewer", [], [], notes, html=viewer_html(content, sources, ranked))


def _sections(sources: ReportSources, out: Path) -> list[Section]:
    sections = [
        Section("metrics", [metrics_table(sources.metrics)], [], []),
        _evaluation_section(sources.metrics),
    ]

    curves = out / "training_curves.png"
    plot_training_curves(sources.run.log, curves, sources.run.best_epoch)
    sections.append(
        Section(
            "training",
            [],
            [
                Figure(
                    curves,
                    "losses of both tasks, Dice per region, subtype F1, learning rate; orange: start of "
                    "phase 2 (joint training); black dashed: the epoch of checkpoint_best",
                )
            ],
            [],
        )
    )

    classification = sources.metrics.get("classification")
    if classification is not None:
        confusion = out / "confusion_matrix.png"
        save_confusion_png(classification, confusion)
        sections.append(Section("confusion", [], [Figure(confusion, "rows: true subtype; columns: predicted")], []))
    else:
        sections.append(Section("confusion", [], [], [sources.metrics.get("classification_note") or "no subtypes"]))

    sections.append(_calibration_section(sources, out))
    sections.append(_inference_section(sources))
    sections.append(_postprocessing_section(sources))
    sections.append(
        Section(
            "cases",
            [cases_table(sources)],
            [],
            ["sorted by mean Dice; click a column to sort, a row to open the case in the viewer below"],
            sortable=True,
            keyed_rows=True,
        )
    )
    sections.append(_viewer_section(sources))
    sections.append(_overlay_section(sources, out))

    if sources.benchmark is not None:
        from nnunet_mtl.benchmark.run import markdown_table

        lines = [line.strip().strip("|").split("|") for line in markdown_table(sources.benchmark).splitlines()]
        table = Table([c.strip() for c in lines[0]], [[c.strip() for c in row] for row in lines[2:]])
        note = f"{sources.benchmark['num_cases']} cases, device {sources.benchmark['device']}"
        tables, notes = [table], [note]
        comparison = sources.benchmark.get("comparison")
        if comparison is not None:
            from nnunet_mtl.evaluation.compare import comparison_table

            tables.append(Table(*comparison_table(comparison)))
            notes.append(f"ours against stock on the truth: A = {comparison['a']}, B = {comparison['b']}")
        sections.append(Section("benchmark", tables, [], notes))
    else:
        sections.append(Section("benchmark", [], [], ["no benchmark given (`nnunet-mtl benchmark`, then --benchmark)"]))
    return sections


def default_out_dir(model_dir: Path, pred_dir: Path | None = None) -> Path:
    return Path(pred_dir or model_dir) / "report"


def build_report(sources: ReportSources, out_dir: Path, title: str = "nnunet-mtl report") -> Path:
    """Write the report folder; returns the path of report.html."""
    out_dir = Path(out_dir)
    check_staged_output_dir(out_dir)
    earlier_report = out_dir.is_dir() and (not any(out_dir.iterdir()) or (out_dir / REPORT_FILE).is_file())
    if out_dir.exists() and not earlier_report:
        raise InputError(out_dir, f"exists and is not an earlier report folder (no {REPORT_FILE}); give another --out")
    with staged_directory(out_dir) as stage:
        sections = _sections(sources, stage)
        facts = run_facts(sources)
        write_json_atomic(stage / "metrics.json", sources.metrics)
        write_text_atomic(stage / "report.md", render_markdown(title, facts, sections))
        write_text_atomic(stage / REPORT_FILE, render_html(title, facts, sections))
    return out_dir / REPORT_FILE
