"""Which subtype readout to fit after training: candidates scored on every model of an accuracy matrix.

    python benchmarks/readout_choice.py --matrix OUT --label LABEL [--out RESULT.json]

For each (setting, seed) model that ``benchmarks/accuracy_matrix.py --out OUT --label LABEL`` trained: the
head's input features (every encoder stage and the six intensity statistics, pooled over the predicted lesion
with the gland as fallback; ``head_probe.pooled_features``, one whole-volume pass of ``checkpoint_best``) of
the training split and of the test split. Every candidate is fitted on the training split's features, as
``HeadConfig.readout`` is, and scored on the test split's: per-model accuracy and macro F1, and each
candidate's accuracy minus the shrinkage LDA's (the readout shipped), paired over all test cases with a
bootstrap 95% interval. Features are cached beside each model (``readout_features_*.npz``).

    python benchmarks/readout_choice.py --matrix OUT --label LABEL --fit-sets [--out RESULT.json]

compares instead what the shipped readout is fitted on: the training split (shipped), every training case
under the 8 flips of its three axes (one row per flip; the "mirror" augmentation trains on all of them), and
the training plus the validation split (cases the network never trained on).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from head_probe import pooled_features

SHIPPED = "shrinkage LDA (Ledoit-Wolf)"


class ShippedReadout:
    """``training/readout.fit_readout``, the readout the trainer installs, as a scikit-learn style classifier."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> ShippedReadout:
        from nnunet_mtl.training.readout import fit_readout

        self.fitted = fit_readout(x, y, num_classes=3)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(x @ self.fitted.weight.T.astype(np.float64) + self.fitted.bias, axis=1)


def candidates() -> dict:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    priors = np.full(3, 1 / 3)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    lda = LinearDiscriminantAnalysis(solver="lsqr", priors=priors)
    return {
        SHIPPED: ShippedReadout,
        "LDA, shrinkage by 5-fold CV": lambda: make_pipeline(
            StandardScaler(),
            GridSearchCV(lda, {"shrinkage": [0.1, 0.3, 0.5, 0.7, 0.9, 0.99]}, cv=folds, scoring="f1_macro"),
        ),
        "nearest class mean (LDA, shrinkage 0.999)": lambda: make_pipeline(
            StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.999, priors=priors)
        ),
        "logistic, C by 5-fold CV": lambda: make_pipeline(
            StandardScaler(),
            LogisticRegressionCV(
                Cs=[0.001, 0.01, 0.1, 1, 10], cv=folds, scoring="f1_macro", max_iter=5000, class_weight="balanced"
            ),
        ),
        "logistic, C = 0.1": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(C=0.1, max_iter=5000, class_weight="balanced")
        ),
    }


# the 8 flips of the three spatial axes (the "mirror" augmentation trains on all of them)
ALL_FLIPS = ((), *(c for n in (1, 2, 3) for c in itertools.combinations((0, 1, 2), n)))
# the sets the shipped readout is fitted on besides the training split (--fit-sets)
OTHER_FIT_SETS = {"train_flips": "training split under 8 flips", "train_validation": "training + validation splits"}


def candidate_fits(fit_sets: bool) -> dict:
    """Name -> (classifier factory, fitting set): the readouts compared, the shipped one first."""
    if fit_sets:
        others = {f"{SHIPPED}, {name}": (ShippedReadout, key) for key, name in OTHER_FIT_SETS.items()}
        return {SHIPPED: (ShippedReadout, "train"), **others}
    return {name: (make, "train") for name, make in candidates().items()}


def features(
    model: Path, images: Path, truth: Path, cache: Path, flips: tuple[tuple[int, ...], ...] = ((),)
) -> tuple[np.ndarray, np.ndarray]:
    if cache.is_file():
        stored = np.load(cache)
        return stored["x"], stored["y"]
    rows = pooled_features(model, images, truth, flips=flips)
    x = np.stack([np.concatenate(case) for case in rows["learned"]])
    y = np.array(rows["subtype"])
    np.savez(cache, x=x, y=y)
    return x, y


def main(argv=None) -> int:
    from sklearn.metrics import f1_score

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matrix", type=Path, required=True, help="accuracy_matrix.py's --out")
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--fit-sets",
        action="store_true",
        help="the shipped readout fitted on other sets instead (training under 8 flips, training + validation)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    fits = candidate_fits(args.fit_sets)
    results, correct = {}, {}
    for run in sorted((args.matrix / args.label).iterdir()):
        if not (run / "result.json").is_file():
            continue
        model = next((run / "nnunet" / "nnUNet_results").glob("Dataset*/*__3d_fullres"))
        data = args.matrix / "data" / run.name
        x_fit, y_fit = features(model, data / "train", data / "train", run / "readout_features_train.npz")
        x_test, y_test = features(model, data / "test", data / "test_key", run / "readout_features_test.npz")
        fit_sets = {"train": (x_fit, y_fit)}
        if args.fit_sets:
            flipped = run / "readout_features_train_flips.npz"
            fit_sets["train_flips"] = features(model, data / "train", data / "train", flipped, ALL_FLIPS)
            x_val, y_val = features(
                model, data / "validation", data / "validation", run / "readout_features_validation.npz"
            )
            fit_sets["train_validation"] = (np.concatenate([x_fit, x_val]), np.concatenate([y_fit, y_val]))
        results[run.name] = {}
        for name, (make, fit_set) in fits.items():
            predicted = make().fit(*fit_sets[fit_set]).predict(x_test)
            correct.setdefault(name, []).append(predicted == y_test)
            results[run.name][name] = {
                "accuracy": float(np.mean(predicted == y_test)),
                "macro_f1": float(f1_score(y_test, predicted, average="macro")),
            }
    names = list(fits)
    print("| model | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for run, scores in results.items():
        print(f"| {run} | " + " | ".join(f"{scores[n]['macro_f1']:.3f}" for n in names) + " |")
    rng = np.random.default_rng(0)
    paired = {}
    shipped = [c.astype(float) for c in correct[SHIPPED]]
    for name in names[1:]:
        # cases resampled within each model, as benchmarks/paired_runs.py does
        differences = [c.astype(float) - s for c, s in zip(correct[name], shipped)]
        draws = [
            np.mean(np.concatenate([d[rng.integers(0, len(d), len(d))] for d in differences])) for _ in range(2000)
        ]
        mean = float(np.mean(np.concatenate(differences)))
        paired[name] = [mean, *map(float, np.percentile(draws, [2.5, 97.5]))]
        print(f"{name} minus {SHIPPED}, subtype correct: {mean:+.3f} [{paired[name][1]:+.3f}, {paired[name][2]:+.3f}]")
    if args.out:
        args.out.write_text(json.dumps({"per_model": results, "paired_accuracy_vs_shipped": paired}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
