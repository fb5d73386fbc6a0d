"""``nnunet-mtl benchmark``: stock nnU-Net, the seed's way and nnunet-mtl on the same weights and cases.

Rows (each method in its own fresh process, one after another, so peak memory is its own):

* (a)  stock nnU-Net's ``nnUNetPredictor`` with its defaults (tile step 0.5, Gaussian, 8-flip mirroring)
  on the segmentation part of the weights (``export-seg``), through its public API;
* (a') nnunet-mtl with stock's workload (sliding window, step 0.5, 8 flips). Stock nnU-Net has no
  subtype head, so (a')'s subtypes (the head over the same tiles and flips) are the reference for the
  class agreement, and its masks show that our sliding window reproduces stock's;
* (b)  the seed's way: whole volume, the full network and then the encoder again for the head;
* (c)  ``nnunet-mtl predict`` with its defaults; (d) with ``--tta``;
* (c*) (c) in the other precision (fp32 where (c) uses bf16 or fp16 autocast, else bf16), for the precision
  choice.

Seconds per case are the median over cases of preprocessing + forward + export run in sequence; the
folder column is each tool's batch mode (nnU-Net's worker processes, our overlapped threads) divided by
the number of cases. Masks are compared with (a)'s by mean Dice and by the voxels labelled
differently (a mean Dice over small lesions moves a lot for one near-tie voxel). Class agreement is
counted against (a') with its 95% Wilson interval, and the differing cases are listed with both sides'
probabilities.
"""

from __future__ import annotations

import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from nnunet_mtl.benchmark.methods import MethodSpec, run_method, stock_precision
from nnunet_mtl.data.layout import Case
from nnunet_mtl.errors import InputError
from nnunet_mtl.io import check_writable_dir, write_json_atomic, write_text_atomic
from nnunet_mtl.precision import resolve_precision

METHODS = ("a", "a_ref", "b", "c", "d", "c_alt")
REFERENCE_METHODS = ("a", "a_ref")  # speed and Dice are relative to (a), subtypes to (a')
OPTIONAL_METHODS = tuple(m for m in METHODS if m not in REFERENCE_METHODS)
LABELS = {
    "a": "(a) stock nnU-Net predictor (step 0.5, Gaussian, 8 flips)",
    "a_ref": "(a') nnunet-mtl with stock's tiles and flips",
    "b": "(b) seed: whole volume, encoder twice",
    "c": "(c) nnunet-mtl predict",
    "d": "(d) nnunet-mtl predict --tta",
    "c_alt": "(c*) nnunet-mtl predict, other precision",
}


def method_specs(
    model_dir: Path, stock_dir: Path, cases: list[Case], out_dir: Path, device: str, folds, checkpoint: str
) -> dict[str, MethodSpec]:
    base = MethodSpec("", "", "ours", model_dir, folds, checkpoint, device, out_dir, tuple(cases))
    alt_precision = "fp32" if resolve_precision("auto", torch.device(device)) != "fp32" else "bf16"
    specs = {
        "a": replace(base, kind="stock", model_dir=stock_dir),
        # stock's tiles, flips and precision (ours would take bf16 on a CPU with bf16 units; stock takes fp32)
        "a_ref": replace(base, path="sliding", tta=True, folder_run=False, precision=stock_precision(device)),
        "b": replace(base, path="whole", encoder_twice=True),
        "c": base,
        "d": replace(base, tta=True),
        "c_alt": replace(base, precision=alt_precision, folder_run=False),
    }
    return {key: replace(spec, key=key, label=LABELS[key], out_dir=out_dir / key) for key, spec in specs.items()}


def _in_fresh_process(spec: MethodSpec) -> dict:
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(run_method, spec).result()


def _dice_means(pred_dir: Path, truth_dir: Path, labels: Path | None, names: list[str]) -> dict:
    from nnunet_mtl.evaluation.evaluate import evaluate_folder

    evaluation = evaluate_folder(pred_dir, truth_dir, labels, cases=names)
    summary = evaluation.to_json()
    return {
        "dice_whole": summary["segmentation"]["whole_pancreas"]["mean_dice"],
        "dice_lesion": summary["segmentation"]["lesion"]["mean_dice"],
        "macro_f1": None if evaluation.classification is None else evaluation.classification.macro_f1,
    }


def voxels_differing(pred_dir: Path, reference_dir: Path, names: list[str]) -> dict:
    """Voxels whose label differs from the reference's masks, over all cases: unlike a mean Dice, one
    near-tie voxel of a 20-voxel lesion does not read as a 5% disagreement."""
    from nnunet_mtl.evaluation.evaluate import read_labels
    from nnunet_mtl.io import NIFTI_SUFFIX

    differing = total = 0
    for name in names:
        ours = read_labels(pred_dir / f"{name}{NIFTI_SUFFIX}")[1]
        theirs = read_labels(reference_dir / f"{name}{NIFTI_SUFFIX}")[1]
        differing += int(np.count_nonzero(ours != theirs))
        total += theirs.size
    return {"voxels_differing_from_a": differing, "voxel_share_differing_from_a": differing / total}


def class_agreement(result: dict, reference: dict, names: list[str]) -> dict:
    """Share of cases whose subtype equals the reference's, with its 95% Wilson interval (12 cases give
    steps of 8%), and the cases that differ with both sides' probabilities and the reference's margin
    (top minus second probability): a flip on a near tie says more about the head than the path."""
    from scipy.stats import binomtest

    agree = sum(result["subtypes"][n] == reference["subtypes"][n] for n in names)
    interval = binomtest(agree, len(names)).proportion_ci(0.95, method="wilson")
    differing = []
    for name in names:
        if result["subtypes"][name] != reference["subtypes"][name]:
            theirs = sorted(reference["subtype_probabilities"][name], reverse=True)
            differing.append(
                {
                    "case": name,
                    "subtype": result["subtypes"][name],
                    "reference_subtype": reference["subtypes"][name],
                    "probabilities": result["subtype_probabilities"][name],
                    "reference_probabilities": reference["subtype_probabilities"][name],
                    "reference_margin": theirs[0] - theirs[1],
                }
            )
    return {
        "class_agreement_with_a": agree / len(names),
        "class_agreement_cases": [agree, len(names)],
        "class_agreement_ci95": [float(interval.low), float(interval.high)],
        "class_disagreements": differing,
    }


def score(results: dict[str, dict], specs: dict[str, MethodSpec], truth_dir: Path | None, labels: Path | None):
    names = [c.name for c in next(iter(specs.values())).cases]
    stock = results["a"]
    stock_median = statistics.median(stock["seconds_per_case"].values())
    reference = results.get("a_ref")
    if "a_ref" in results:
        stock["forward_passes_per_case"] = results["a_ref"]["forward_passes_per_case"]
    for key, result in results.items():
        median = statistics.median(result["seconds_per_case"].values())
        result["median_seconds_per_case"] = median
        result["speedup_vs_a"] = stock_median / median
        if result["folder_seconds"] is not None:
            result["folder_seconds_per_case"] = result["folder_seconds"] / len(names)
        if key != "a":
            agreement = _dice_means(specs[key].out_dir, specs["a"].out_dir, None, names)
            result["dice_to_a"] = {"whole": agreement["dice_whole"], "lesion": agreement["dice_lesion"]}
            result.update(voxels_differing(specs[key].out_dir, specs["a"].out_dir, names))
        if key != "a" and result["subtypes"] is not None and reference is not None:
            result.update(class_agreement(result, reference, names))
        if truth_dir is not None:
            result["truth"] = _dice_means(specs[key].out_dir, truth_dir, labels, names)
    if truth_dir is not None:
        for result in results.values():
            for region in ("whole", "lesion"):
                ours, theirs = result["truth"][f"dice_{region}"], stock["truth"][f"dice_{region}"]
                delta = None if ours is None or theirs is None else ours - theirs
                result["truth"][f"delta_{region}_vs_a"] = delta


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _agreement_cell(row: dict) -> str:
    if row.get("class_agreement_with_a") is None:
        return "-"
    if "class_agreement_cases" not in row:  # a benchmark.json written before the interval was reported
        return f"{row['class_agreement_with_a']:.0%}"
    (agree, total), (low, high) = row["class_agreement_cases"], row["class_agreement_ci95"]
    return f"{row['class_agreement_with_a']:.0%} ({agree}/{total}; CI {low:.0%}-{high:.0%})"


def _differing_cell(row: dict) -> str:
    if "voxels_differing_from_a" not in row:  # (a) itself, or a benchmark.json written before it was counted
        return "-"
    return f"{row['voxels_differing_from_a']} ({row['voxel_share_differing_from_a']:.3%})"


def markdown_table(benchmark: dict) -> str:
    rows = benchmark["methods"]
    with_truth = benchmark["truth"] is not None
    memory = "CUDA peak MiB" if benchmark["device"] == "cuda" else "peak RSS MiB"
    header = ["method", "s/case (median)", "x faster than (a)", "folder s/case", "passes/case"]
    if with_truth:
        header += ["Dice whole", "Dice lesion", "Δ whole vs (a)", "Δ lesion vs (a)", "macro F1"]
    header += [
        "Dice to (a) whole/lesion",
        "voxels differing from (a)",
        "class agreement with (a') (95% CI)",
        "precision",
        memory,
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, r in rows.items():
        cells = [
            LABELS[key],
            _fmt(r["median_seconds_per_case"]),
            _fmt(r["speedup_vs_a"], ".1f"),
            _fmt(r.get("folder_seconds_per_case")),
            _fmt(r.get("forward_passes_per_case"), ".0f"),
        ]
        if with_truth:
            t = r["truth"]
            cells += [
                _fmt(t["dice_whole"], ".4f"),
                _fmt(t["dice_lesion"], ".4f"),
                _fmt(t["delta_whole_vs_a"], "+.4f"),
                _fmt(t["delta_lesion_vs_a"], "+.4f"),
                _fmt(t["macro_f1"], ".3f"),
            ]
        to_a = r.get("dice_to_a")
        cells += [
            "-" if to_a is None else f"{_fmt(to_a['whole'], '.4f')} / {_fmt(to_a['lesion'], '.4f')}",
            _differing_cell(r),
            _agreement_cell(r),
            r["precision"],
            _fmt(r.get("cuda_peak_mib") or r["peak_rss_mib"], ".0f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def select_methods(requested: list[str] | None) -> tuple[str, ...]:
    """The references and the requested rows (all rows when ``requested`` is None), in table order."""
    unknown = sorted(set(requested or ()) - set(OPTIONAL_METHODS))
    if unknown:
        raise InputError(
            None, f"--methods: unknown row(s) {', '.join(unknown)}; choose among {' '.join(OPTIONAL_METHODS)}"
        )
    return (*REFERENCE_METHODS, *(m for m in OPTIONAL_METHODS if requested is None or m in requested))


def check_inputs(
    model_dir: Path,
    cases: list[Case],
    out_dir: Path,
    truth_dir: Path | None = None,
    labels: Path | None = None,
    folds=None,
    checkpoint: str = "best",
) -> None:
    """Read everything the methods will read before any of them runs, so that a bad input writes nothing
    (the methods run in worker processes, long after the start)."""
    from nnunet_mtl.evaluation.evaluate import check_truth
    from nnunet_mtl.inference.cases import read_image
    from nnunet_mtl.inference.model import load_model

    load_model(model_dir, folds, (checkpoint,))
    for case in cases:
        if case.image.is_dir():
            raise InputError(case.image, "is a DICOM series, but stock nnU-Net (row a) reads image files only")
        read_image(case.image)
    if truth_dir is not None:
        check_truth(truth_dir, [c.name for c in cases], labels)
    check_writable_dir(out_dir)


def run_benchmark(
    model_dir: Path,
    cases: list[Case],
    out_dir: Path,
    device: str = "cpu",
    truth_dir: Path | None = None,
    labels: Path | None = None,
    folds=None,
    checkpoint: str = "best",
    methods=METHODS,
    log=print,
) -> dict:
    from nnunet_mtl.model.checkpoint import available_folds
    from nnunet_mtl.model.export import export_segmentation_model

    out_dir = Path(out_dir)
    checkpoint_file = f"checkpoint_{checkpoint}.pth"
    folds = tuple(folds) if folds else tuple(available_folds(model_dir, checkpoint_file))
    stock_dir = export_segmentation_model(model_dir, out_dir / "stock_model", folds, checkpoint_file)
    specs = method_specs(model_dir, stock_dir, cases, out_dir, device, folds, checkpoint)
    specs = {k: v for k, v in specs.items() if k in methods or k in REFERENCE_METHODS}
    results = {}
    for key, spec in specs.items():
        log(f"benchmark: {spec.label} on {len(cases)} cases")
        results[key] = _in_fresh_process(spec)
    score(results, specs, truth_dir, labels)
    benchmark = {
        "model_dir": str(model_dir),
        "folds": list(folds),
        "checkpoint": checkpoint,
        "device": device,
        "num_cases": len(cases),
        "truth": None if truth_dir is None else str(truth_dir),
        "methods": results,
        "comparison": None,
    }
    table = markdown_table(benchmark)
    if truth_dir is not None and "c" in specs:
        from nnunet_mtl.evaluation.compare import compare_folders, comparison_table

        names = [c.name for c in cases]
        comparison = compare_folders(specs["a"].out_dir, specs["c"].out_dir, truth_dir, labels, names).to_json()
        benchmark["comparison"] = {"a": LABELS["a"], "b": LABELS["c"], **comparison}
        header, rows = comparison_table(comparison)
        table += (
            f"\n\nA = {LABELS['a']}, B = {LABELS['c']}, against the truth (`nnunet-mtl compare`):\n\n"
            + "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)])
            + "\n"
            + "\n".join("| " + " | ".join(r) + " |" for r in rows)
        )
    write_json_atomic(out_dir / "benchmark.json", benchmark)
    write_text_atomic(out_dir / "benchmark.md", table + "\n")
    benchmark["table"] = table
    return benchmark
