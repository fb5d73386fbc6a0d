"""Which inference path should be the default? One pass against the sliding window, scored against stock's tiles.

Runs one model on one folder of cases with each path, every one in a fresh process (``nnunet-mtl benchmark``'s
method runner), in the same precision (stock's: fp32 on a CPU, fp16 on CUDA), without postprocessing:

* ``stock tiles``: nnU-Net's sliding window (step 0.5, Gaussian) with its 8 mirrored passes per tile, the
  reference (``benchmark``'s row (a'), whose masks equal stock nnU-Net's);
* ``one pass``: the whole padded volume in one forward pass (``one pass, 8 flips``: with stock's mirroring,
  ``predict --tta``);
* ``sliding 0.5``, ``sliding 0.75``, ``sliding 1.0``: the sliding window at that step, no mirroring.

Each is scored against the truth and paired with the reference (``nnunet-mtl compare``: Dice differences
with bootstrap intervals, McNemar on subtype correctness), over all cases and over the cases larger than
one patch (where the paths differ at all: a case within the patch is one tile on every path). The
criterion of issue 15, as ``train`` applies it on the validation split (training/inference_choice.py): the
fastest path whose mean Dice is at most 0.01 below the reference's on both regions and whose subtype accuracy
is at most one case below it. The table also names what the model folder chose on its validation split
(``nnunet_mtl_inference.json``) and whether that choice meets the criterion on these cases.

    python benchmarks/path_choice.py --model-dir MODEL -i CASES --truth KEY --out OUT [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

from nnunet_mtl.config import InferenceConfig

DICE_TOLERANCE = InferenceConfig.choice_dice_tolerance
CASES_TOLERANCE = InferenceConfig.choice_subtype_cases
VARIANTS = {  # name: (path, step, mirroring)
    "stock tiles": ("sliding", 0.5, True),
    "one pass": ("whole", 0.5, False),
    "one pass, 8 flips": ("whole", 0.5, True),
    "sliding 0.5": ("sliding", 0.5, False),
    "sliding 0.75": ("sliding", 0.75, False),
    "sliding 1.0": ("sliding", 1.0, False),
}
REFERENCE = "stock tiles"


def _folder_name(variant: str) -> str:
    return variant.replace(",", "").replace(" ", "_")


def run_variants(model_dir: Path, cases, out: Path, device: str, variants: list[str]) -> dict[str, dict]:
    from nnunet_mtl.benchmark.methods import MethodSpec, stock_precision
    from nnunet_mtl.benchmark.run import _in_fresh_process

    base = MethodSpec("", "", "ours", model_dir, None, "best", device, out, tuple(cases), folder_run=False)
    results = {}
    for name in variants:
        path, step, mirroring = VARIANTS[name]
        folder = out / _folder_name(name)
        spec = replace(
            base,
            key=name,
            label=name,
            out_dir=folder,
            path=path,
            tile_step_size=step,
            tta=mirroring,
            precision=stock_precision(device),
        )
        cached = folder / "method.json"
        if cached.is_file():
            results[name] = json.loads(cached.read_text())
            continue
        print(f"path_choice: {name} on {len(cases)} cases", file=sys.stderr, flush=True)
        results[name] = _in_fresh_process(spec)
        cached.write_text(json.dumps(results[name], indent=2) + "\n")
    return results


def _paired(reference: Path, other: Path, truth: Path, names: list[str]) -> dict:
    from nnunet_mtl.evaluation.compare import compare_folders

    rows = {r["metric"]: r for r in compare_folders(reference, other, truth, None, names).to_json()["rows"]}
    correct = rows["subtype_correct"]
    return {
        "num_cases": len(names),
        "dice_whole": [rows["dice_whole_pancreas"]["mean_b"], rows["dice_whole_pancreas"]["difference"]],
        "dice_lesion": [rows["dice_lesion"]["mean_b"], rows["dice_lesion"]["difference"]],
        "correct": round(correct["mean_b"] * len(names)),
        "correct_reference": round(correct["mean_a"] * len(names)),
        "discordant": correct["discordant"],
        "mcnemar_p": correct["p_value"],
    }


def score(results: dict[str, dict], out: Path, truth: Path) -> dict:
    names = sorted(results[REFERENCE]["seconds_per_case"])
    # the reference's passes per case are 8 flips x its tiles: more than 8 means more than one tile
    multi_tile = [n for n in names if results[REFERENCE]["forward_passes"][n] > 8]
    summary = {}
    for name, result in results.items():
        folder = out / _folder_name(name)
        entry = {
            "seconds_per_case": statistics.median(result["seconds_per_case"].values()),
            "forward_seconds_per_case": result["stage_seconds_median"]["forward"],
            "forward_passes_per_case": result["forward_passes_per_case"],
            "all": _paired(out / _folder_name(REFERENCE), folder, truth, names),
            "larger_than_patch": _paired(out / _folder_name(REFERENCE), folder, truth, multi_tile)
            if multi_tile
            else None,
        }
        summary[name] = entry
    reference = summary[REFERENCE]["all"]
    keeping = [
        name
        for name, entry in summary.items()
        if entry["all"]["dice_whole"][1]["value"] >= -DICE_TOLERANCE
        and entry["all"]["dice_lesion"][1]["value"] >= -DICE_TOLERANCE
        and entry["all"]["correct"] >= reference["correct"] - CASES_TOLERANCE
    ]
    for name in summary:
        summary[name]["meets_criterion"] = name in keeping
    fastest = min(keeping, key=lambda n: summary[n]["forward_seconds_per_case"])
    return {"variants": summary, "num_cases": len(names), "num_larger_than_patch": len(multi_tile), "choice": fastest}


def model_choice(model_dir: Path) -> str | None:
    """The variant the model's inference choice runs (None where it has none or no variant here runs it)."""
    from nnunet_mtl.inference.choice import read_fold_choice, read_inference_choice

    folds = sorted(int(p.name[5:]) for p in model_dir.glob("fold_*") if p.name[5:].isdigit())
    if not any(read_fold_choice(model_dir / f"fold_{f}") for f in folds):
        return None
    choice = read_inference_choice(model_dir, folds)
    step = choice.determined_on.get("tile_step_size", 0.5)
    if choice.path == "auto":
        return "one pass, 8 flips" if choice.mirroring else "one pass"
    wanted = (choice.path, step, choice.mirroring)
    return next((name for name, variant in VARIANTS.items() if variant == wanted), None)


def _difference(value: dict) -> str:
    return f"{value['value']:+.4f} [{value['ci'][0]:+.4f}, {value['ci'][1]:+.4f}]"


def markdown(scored: dict) -> str:
    chosen = scored.get("model_choice")
    validation = "the model folder has no inference choice"
    if chosen is not None:
        met = scored["variants"][chosen]["meets_criterion"] if chosen in scored["variants"] else None
        verdict = {True: "meets", False: "does not meet", None: "was not run for"}[met]
        validation = f"chosen on the validation split: **{chosen}**, which {verdict} the criterion on these cases"
    lines = [
        f"{scored['num_cases']} cases, {scored['num_larger_than_patch']} larger than one patch; "
        f"criterion met by the fastest: **{scored['choice']}**; {validation}",
        "",
        "| path | forward s/case | passes/case | Dice whole (Δ to stock tiles) | Dice lesion (Δ) | subtype correct "
        "(stock tiles) | larger than a patch: Δ whole / Δ lesion / correct |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in scored["variants"].items():
        a, big = entry["all"], entry["larger_than_patch"]
        big_cell = "-"
        if big:
            big_cell = (
                f"{_difference(big['dice_whole'][1])} / {_difference(big['dice_lesion'][1])} / "
                f"{big['correct']} of {big['num_cases']} ({big['correct_reference']})"
            )
        lines.append(
            f"| {name} | {entry['forward_seconds_per_case']:.3f} | {entry['forward_passes_per_case']:.0f} | "
            f"{a['dice_whole'][0]:.4f} ({_difference(a['dice_whole'][1])}) | "
            f"{a['dice_lesion'][0]:.4f} ({_difference(a['dice_lesion'][1])}) | "
            f"{a['correct']} ({a['correct_reference']}; McNemar p {a['mcnemar_p']:.2f}) | {big_cell} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from nnunet_mtl.inference.cases import find_input_cases

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("-i", "--input", type=Path, required=True)
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    if REFERENCE not in args.variants:
        args.variants.insert(0, REFERENCE)
    args.out.mkdir(parents=True, exist_ok=True)
    results = run_variants(args.model_dir, find_input_cases(args.input), args.out, args.device, args.variants)
    scored = score(results, args.out, args.truth)
    scored["model_choice"] = model_choice(args.model_dir)
    (args.out / "path_choice.json").write_text(json.dumps(scored, indent=2) + "\n")
    table = markdown(scored)
    (args.out / "path_choice.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
