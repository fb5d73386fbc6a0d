"""How conspicuous the lesions of each split are, and how a model's lesion Dice depends on it.

    python benchmarks/lesion_contrast.py OUT [--labels LABEL ...] [--low 1.0] [--json FILE]

``OUT`` is a folder of ``benchmarks/accuracy_matrix.py``: its phantoms under ``OUT/data/<setting>-s<seed>/`` and
the runs of each label under ``OUT/<label>/<setting>-s<seed>/``. A lesion's contrast-to-noise ratio is the
mean intensity in the lesion minus that of the normal gland (label 1), over the gland's standard deviation,
from the image and its reference mask. Per phantom: how many lesions of the training, validation and test
splits have ``|CNR| < --low`` (default 1). Per run: the test split's mean lesion Dice (as the run's
``nnunet-mtl evaluate`` scored it) of the low- and high-contrast lesions, and how many of each it missed
(Dice below 0.05), and the Dice standardised to the setting's own mix: the two strata's means weighted by
the share of low-contrast lesions over every split of every seed of that setting. A test split of 36 cases
draws that share with a binomial spread, and the stratum a lesion falls in moves its Dice far more than any
model change measured so far: the standardised Dice says how the model does on the setting rather than on
one draw of its test split (the raw mean stays the result).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nnunet_mtl.data.layout import scan_assignment_data
from nnunet_mtl.io import array_of, read_volume

MISSED_DICE = 0.05


def lesion_cnr(image: Path, mask: Path) -> float:
    """(mean in the lesion - mean in the normal gland) / standard deviation in the normal gland."""
    intensities = array_of(read_volume(image)).astype(np.float64)
    labels = np.rint(array_of(read_volume(mask))).astype(np.int64)
    lesion, gland = intensities[labels == 2], intensities[labels == 1]
    return float((lesion.mean() - gland.mean()) / gland.std())


def split_cnrs(data: Path) -> dict[str, dict[str, float]]:
    """Every labelled case's CNR per split; the test split's from ``test_key/<case>.nii.gz``."""
    cases = scan_assignment_data(data)
    splits = {
        "train": {c.name: lesion_cnr(c.image, c.mask) for c in cases.train},
        "validation": {c.name: lesion_cnr(c.image, c.mask) for c in cases.validation},
    }
    splits["test"] = {c.name: lesion_cnr(c.image, data / "test_key" / f"{c.name}.nii.gz") for c in cases.test}
    return splits


def run_strata(run: Path, test_cnr: dict[str, float], low: float) -> dict:
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    dice = {c["name"]: c["dice_lesion"] for c in metrics["cases"]}
    strata = {}
    for stratum, keep in (("low", lambda v: abs(v) < low), ("high", lambda v: abs(v) >= low)):
        values = np.array([dice[name] for name, cnr in test_cnr.items() if keep(cnr)], dtype=float)
        strata[stratum] = {
            "cases": int(values.size),
            "mean_dice": float(values.mean()) if values.size else None,
            "missed": int(np.sum(values < MISSED_DICE)),
        }
    strata["all"] = float(np.mean(list(dice.values())))
    return strata


def _setting(run_name: str) -> str:
    return run_name.rsplit("-s", 1)[0]


def setting_low_shares(phantoms: dict) -> dict[str, float]:
    """Per setting, the share of low-contrast lesions over every split of every seed."""
    low, total = {}, {}
    for name, phantom in phantoms.items():
        setting = _setting(name)
        for n, cases in phantom["low_counts"].values():
            low[setting], total[setting] = low.get(setting, 0) + n, total.get(setting, 0) + cases
    return {setting: low[setting] / total[setting] for setting in low}


def standardised(strata: dict, low_share: float) -> float | None:
    if not strata["low"]["cases"] or not strata["high"]["cases"]:
        return None
    return low_share * strata["low"]["mean_dice"] + (1 - low_share) * strata["high"]["mean_dice"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the accuracy matrix's folder")
    parser.add_argument("--labels", nargs="*", default=[], help="run labels to stratify (default: none)")
    parser.add_argument("--low", type=float, default=1.0, help="|CNR| below this is low contrast (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    results = {"low": args.low, "phantoms": {}, "runs": {}}
    print("| phantom | low-contrast lesions: train | validation | test |\n|---|---|---|---|")
    for data in sorted(p for p in (args.out / "data").iterdir() if (p / "phantom.json").is_file()):
        cnrs = split_cnrs(data)
        counts = {split: [sum(abs(v) < args.low for v in cnr.values()), len(cnr)] for split, cnr in cnrs.items()}
        results["phantoms"][data.name] = {"cnr": cnrs, "low_counts": counts}
        print(f"| {data.name} | " + " | ".join(f"{n} of {total}" for n, total in counts.values()) + " |")
    shares = setting_low_shares(results["phantoms"])
    results["setting_low_share"] = shares
    print("\nlow-contrast share, every split and seed: " + ", ".join(f"{k} {v:.2f}" for k, v in shares.items()))
    print(
        "\n| label | run | lesion Dice | low contrast: cases, Dice, missed | high contrast: cases, Dice, missed "
        "| standardised |\n|---|---|---|---|---|---|"
    )
    for label in args.labels:
        for run in sorted(p for p in (args.out / label).iterdir() if (p / "evaluation").is_dir()):
            strata = run_strata(run, results["phantoms"][run.name]["cnr"]["test"], args.low)
            strata["standardised"] = standardised(strata, shares[_setting(run.name)])
            results["runs"][f"{label}/{run.name}"] = strata
            cells = [
                f"{s['cases']}, {s['mean_dice']:.3f}, {s['missed']}" if s["cases"] else "0"
                for s in (strata["low"], strata["high"])
            ]
            standard = "-" if strata["standardised"] is None else f"{strata['standardised']:.3f}"
            print(f"| {label} | {run.name} | {strata['all']:.3f} | {cells[0]} | {cells[1]} | {standard} |")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
