"""Paired comparison of two labels of ``benchmarks/accuracy_matrix.py`` over the runs both have: per-case
differences (B - A) of whole and lesion Dice and of subtype correctness, pooled over the runs, with 95%
bootstrap intervals (cases resampled within each run).

    python benchmarks/paired_runs.py OUT LABEL_A LABEL_B [--runs RUN[:OTHER_LABEL_A] ...]

``--runs default-s0:rerun`` takes side A of run ``default-s0`` from label ``rerun`` (a repeated run).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESAMPLES = 2000


def _cases(folder: Path) -> dict:
    metrics = json.loads((folder / "evaluation" / "metrics.json").read_text())
    return {c["name"]: c for c in metrics["cases"]}


def paired_difference(by_run: list[np.ndarray], rng: np.random.Generator) -> list[float]:
    """The mean of per-case differences pooled over runs, and its 95% bootstrap interval with the cases
    resampled within each run: [mean, low, high]."""
    means = [np.concatenate([d[rng.integers(0, len(d), len(d))] for d in by_run]).mean() for _ in range(RESAMPLES)]
    return [float(np.concatenate(by_run).mean()), *map(float, np.percentile(means, [2.5, 97.5]))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--runs", nargs="*", default=None, help="run folders to compare (default: all both have)")
    args = parser.parse_args(argv)
    runs = args.runs or sorted(
        p.name for p in (args.out / args.a).iterdir() if (args.out / args.b / p.name / "evaluation").is_dir()
    )
    keys = ("dice_whole_pancreas", "dice_lesion", "subtype_correct")
    differences = {key: {} for key in keys}  # per key, per run: the cases' differences B - A
    for spec in runs:
        run, _, a_label = spec.partition(":")
        a, b = _cases(args.out / (a_label or args.a) / run), _cases(args.out / args.b / run)
        for key in keys:
            values = []
            for name in sorted(a):
                if key == "subtype_correct":
                    values.append(
                        sum(s * int(c[name]["subtype_pred"] == c[name]["subtype_true"]) for s, c in ((-1, a), (1, b)))
                    )
                elif a[name][key] is not None and b[name][key] is not None:
                    values.append(b[name][key] - a[name][key])
            differences[key][spec] = np.array(values, dtype=float)
    rng = np.random.default_rng(0)
    result = {"a": args.a, "b": args.b, "runs": runs}
    for key in keys:
        by_run = [d for d in differences[key].values() if len(d)]
        mean, low, high = paired_difference(by_run, rng)
        result[key] = {"mean_difference": mean, "ci95": [low, high], "cases": sum(map(len, by_run))}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
