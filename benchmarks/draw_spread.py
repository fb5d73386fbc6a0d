"""One draw of the accuracy matrix against the spread of earlier draws of the baseline, run by run.

    python benchmarks/draw_spread.py NEW --against LABEL ... [--results DIR]

Reads ``DIR/<label>_<setting>-s<seed>.json`` (``benchmarks/accuracy_matrix.py``'s ``result.json`` of each run,
default ``benchmarks/results/readout``). Where a change alters training, its runs cannot be paired with the
baseline's on the same weights; what they can be compared with is how far repeated trainings of the baseline
spread on the same phantoms. Per run and metric: the baseline's mean, standard deviation and range over its
draws, the new value and its difference from that mean; then the mean difference over the runs with a 95%
t interval (the runs as the unit).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

METRICS = ("dice_whole_pancreas", "dice_lesion", "macro_f1")


def load(results: Path, label: str) -> dict[str, dict]:
    runs = {}
    for path in sorted(results.glob(f"{label}_*-s?.json")):
        result = json.loads(path.read_text())
        runs[f"{result['setting']}-s{result['seed']}"] = result
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("new")
    parser.add_argument("--against", nargs="+", required=True, help="labels of the baseline's draws")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "readout")
    args = parser.parse_args(argv)
    new = load(args.results, args.new)
    baseline = [load(args.results, label) for label in args.against]
    summary = {}
    for metric in METRICS:
        print(f"\n{metric}\n| run | baseline mean (sd) [range], draws | {args.new} | difference |\n|---|---|---|---|")
        differences = []
        for run, result in new.items():
            values = np.array([draw[run]["test"][metric][0] for draw in baseline if run in draw])
            value = result["test"][metric][0]
            differences.append(value - values.mean())
            print(
                f"| {run} | {values.mean():.3f} ({values.std(ddof=1):.3f}) [{values.min():.3f}, {values.max():.3f}], "
                f"{values.size} | {value:.3f} | {differences[-1]:+.3f} |"
            )
        mean = float(np.mean(differences))
        half = float(stats.t.ppf(0.975, len(differences) - 1) * stats.sem(differences))
        summary[metric] = [mean, mean - half, mean + half]
        print(f"mean difference over {len(differences)} runs: {mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
