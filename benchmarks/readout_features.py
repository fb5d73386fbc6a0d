"""Which features the subtype readout reads: every feature, the intensity statistics, or the validation's choice.

    python benchmarks/readout_features.py RUN [RUN ...] [--out RESULT.json]

Each RUN is a (setting, seed) folder of ``benchmarks/accuracy_matrix.py`` (OUT/LABEL/SETTING-sSEED). On the
head features of ``predict``'s own engine (``readout_choice.engine_features``: checkpoint_best on the model's
path and mirroring, cached beside the run) of the training, validation and test splits, the readouts of
``training/readout.py`` are fitted on the training split: on every feature (the readout before the choice
existed), on the intensity statistics only, and the one ``choose_readout`` keeps on the validation split (as
the final validation does). Reported per run: each one's test macro F1 and validation accuracy, and which the
choice kept; over all runs, each one's subtype correct minus every feature's, paired over the test cases
(resampled within each run) with a 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_runs import paired_difference
from readout_choice import MLP_LOGITS, engine_features

SPLITS = {"train": "train", "validation": "validation", "test": "test_key"}  # images folder -> truth folder


def run_features(run: Path) -> tuple[dict, int]:
    """Each split's (features, subtypes) without the MLP's logits, and the number of intensity statistics."""
    model = next((run / "nnunet" / "nnUNet_results").glob("Dataset*/*__3d_fullres"))
    data = run.parents[1] / "data" / run.name
    splits = {}
    for split, truth in SPLITS.items():
        cache = run / f"readout_features_engine_{split}.npz"
        x, y, sizes = engine_features(model, data / split, data / truth, cache)
        splits[split] = (x[:, :-MLP_LOGITS], y)
    return splits, sizes[-1]


def compare(run: Path) -> tuple[dict, dict]:
    from sklearn.metrics import f1_score

    from nnunet_mtl.config import HeadConfig
    from nnunet_mtl.training.readout import choose_readout, fit_readouts

    splits, num_statistics = run_features(run)
    (x, y), (xv, yv), (xt, yt) = splits["train"], splits["validation"], splits["test"]
    config = HeadConfig()
    fitted = fit_readouts(x, y, 3, config.readout_features, num_statistics)
    chosen = choose_readout(fitted, xv, yv, config.readout_choice_confidence)
    readouts = {f"{f.features} features": f for f in fitted} | {"validation's choice": chosen}
    row, correct = {"chosen": chosen.features, "choice": list(chosen.choice)}, {}
    for name, readout in readouts.items():
        predicted = readout.logits(xt).argmax(1)
        correct[name] = (predicted == yt).astype(float)
        row[name] = {
            "test_macro_f1": float(f1_score(yt, predicted, average="macro")),
            "test_accuracy": float(correct[name].mean()),
            "validation_accuracy": float(np.mean(readout.logits(xv).argmax(1) == yv)),
        }
    return row, correct


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows, correct = {}, {}
    for run in args.runs:
        rows[run.name], right = compare(run)
        for name, values in right.items():
            correct.setdefault(name, []).append(values)
        scores = ", ".join(f"{k} {v['test_macro_f1']:.3f}" for k, v in rows[run.name].items() if isinstance(v, dict))
        print(f"{run.name}: test macro F1 {scores}; chosen: {rows[run.name]['chosen']}", flush=True)
    rng = np.random.default_rng(0)
    reference = correct.pop("all features")
    paired = {}
    for name, values in correct.items():
        paired[name] = paired_difference([a - b for a, b in zip(values, reference)], rng)
        mean = paired[name][0]
        print(
            f"{name} minus all features, subtype correct: {mean:+.3f} [{paired[name][1]:+.3f}, {paired[name][2]:+.3f}]"
        )
    if args.out:
        args.out.write_text(json.dumps({"per_run": rows, "paired_accuracy_vs_all": paired}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
