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

    python benchmarks/readout_choice.py --matrix OUT --label LABEL --features engine [--out RESULT.json]

takes the features from ``predict``'s own inference engine instead (``CasePrediction.head_features``: the
head's layer-normalised stages and statistics, in the engine's precision), exactly what the trainer fits its
readout on and what the installed readout classifies, and adds the trained MLP's logits (candidates that
combine it with a fitted readout). The shipped candidate's predictions are checked against the logits of the
readout the trainer installed.

    python benchmarks/readout_choice.py --synthetic

scores the two ensembles (bagging, random subspaces) against the shipped LDA on synthetic Gaussian classes,
where the LDA's own model holds (``synthetic_check``).
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
from paired_runs import paired_difference

SHIPPED = "shrinkage LDA (Ledoit-Wolf)"
MLP_LOGITS = 3  # engine features end with the trained MLP's logits, one per subtype


class LinearReadout:
    """A fitted linear map of the features to the subtype logits, as the head's readout buffers hold one."""

    weight: np.ndarray  # (classes, features)
    bias: np.ndarray  # (classes,)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(x @ self.weight.T + self.bias, axis=1)


class ShippedReadout(LinearReadout):
    """``training/readout.fit_readout``, the readout the trainer installs, as a scikit-learn style classifier."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> ShippedReadout:
        from nnunet_mtl.training.readout import fit_readout

        fitted = fit_readout(x, y, num_classes=3)
        self.weight, self.bias = fitted.weight.astype(np.float64), fitted.bias.astype(np.float64)
        return self


def feature_blocks(sizes: list[int]) -> list[np.ndarray]:
    """The column indices of each feature block (the pooled stages, shallow to deep, then the statistics)."""
    return np.split(np.arange(sum(sizes)), np.cumsum(sizes)[:-1])


class StageLDAs(LinearReadout):
    """A shrinkage LDA per block of features (each pooled stage, the intensity statistics) with their logits
    summed: a product of experts, each estimating a covariance of tens of features, not hundreds. Still one
    linear map of all features, as the head's readout buffers hold."""

    def __init__(self, sizes: list[int]):
        self.blocks = feature_blocks(sizes)

    def fit(self, x: np.ndarray, y: np.ndarray) -> StageLDAs:
        fits = [ShippedReadout().fit(x[:, block], y) for block in self.blocks]
        self.weight = np.concatenate([f.weight for f in fits], axis=1)
        self.bias = np.sum([f.bias for f in fits], axis=0)
        return self


class BaggedLDA(LinearReadout):
    """The shipped LDA fitted on bootstrap resamples of the training cases, logits averaged (one linear map)."""

    def __init__(self, resamples: int = 50):
        self.resamples = resamples

    def fit(self, x: np.ndarray, y: np.ndarray) -> BaggedLDA:
        rng = np.random.default_rng(0)
        weights, biases = [], []
        while len(weights) < self.resamples:
            # stratified, so every class keeps the two cases a within-class covariance needs
            rows = np.concatenate([rng.choice(np.flatnonzero(y == k), np.sum(y == k)) for k in range(3)])
            if min(len(np.unique(rows[y[rows] == k])) for k in range(3)) < 2:
                continue
            fitted = ShippedReadout().fit(x[rows], y[rows])
            weights.append(fitted.weight)
            biases.append(fitted.bias)
        self.weight, self.bias = np.mean(weights, axis=0), np.mean(biases, axis=0)
        return self


class BlocksLDA(LinearReadout):
    """The shipped LDA on some feature blocks only (``blocks`` index ``sizes``: the pooled stages, shallow to
    deep, then the intensity statistics); zero weight on the others."""

    def __init__(self, sizes: list[int], blocks: list[int]):
        columns = feature_blocks(sizes)
        self.columns = np.concatenate([columns[b] for b in blocks])

    def fit(self, x: np.ndarray, y: np.ndarray) -> BlocksLDA:
        readout = ShippedReadout().fit(x[:, self.columns], y)
        self.weight = np.zeros((readout.weight.shape[0], x.shape[1]))
        self.weight[:, self.columns], self.bias = readout.weight, readout.bias
        return self


class SubspaceLDA(LinearReadout):
    """The shipped LDA fitted on random halves of the features, logits averaged (the random subspace method,
    which suits linear classifiers of few cases in many dimensions); one linear map."""

    def __init__(self, subspaces: int = 50):
        self.subspaces = subspaces

    def fit(self, x: np.ndarray, y: np.ndarray) -> SubspaceLDA:
        rng = np.random.default_rng(0)
        self.weight, self.bias = np.zeros((3, x.shape[1])), np.zeros(3)
        for _ in range(self.subspaces):
            columns = rng.choice(x.shape[1], x.shape[1] // 2, replace=False)
            fitted = ShippedReadout().fit(x[:, columns], y)
            self.weight[:, columns] += fitted.weight / self.subspaces
            self.bias += fitted.bias / self.subspaces
        return self


class WithMLP:
    """A readout's log-posterior plus the trained MLP's (the last three columns of the engine's features)."""

    def __init__(self, readout):
        self.readout = readout

    def fit(self, x: np.ndarray, y: np.ndarray) -> WithMLP:
        self.readout.fit(x[:, :-MLP_LOGITS], y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        from scipy.special import log_softmax

        features, mlp = x[:, :-MLP_LOGITS], x[:, -MLP_LOGITS:]
        logits = features @ self.readout.weight.T + self.readout.bias
        return np.argmax(log_softmax(logits, axis=1) + log_softmax(mlp, axis=1), axis=1)


def candidates(sizes: list[int], mlp: bool = False) -> dict:
    """Name -> classifier factory. ``sizes``: the sizes of the feature blocks (stages, statistics) for the
    per-block candidates; ``mlp``: the features end with the trained MLP's logits (engine features)."""
    from sklearn.covariance import OAS
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    priors = np.full(3, 1 / 3)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    lda = LinearDiscriminantAnalysis(solver="lsqr", priors=priors)
    found = {
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
        "standardised shrinkage LDA": lambda: make_pipeline(
            StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=priors)
        ),
        "OAS-shrinkage LDA": lambda: LinearDiscriminantAnalysis(
            solver="lsqr", covariance_estimator=OAS(), priors=priors
        ),
        "PCA (90% of variance), shrinkage LDA": lambda: make_pipeline(
            PCA(0.9, random_state=0), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=priors)
        ),
        "bagged shrinkage LDA (50 resamples)": BaggedLDA,
        "random-subspace shrinkage LDA (50 halves)": SubspaceLDA,
    }
    statistics = len(sizes) - 1
    found["shrinkage LDA per stage, logits summed"] = lambda: StageLDAs(sizes)
    found["shrinkage LDA, intensity statistics only"] = lambda: BlocksLDA(sizes, [statistics])
    found["shrinkage LDA, stages 0-1 + statistics"] = lambda: BlocksLDA(sizes, [0, 1, statistics])
    found["shrinkage LDA, every stage, no statistics"] = lambda: BlocksLDA(sizes, list(range(statistics)))
    if mlp:
        found = {name: (lambda make=make: WithoutLast(make(), MLP_LOGITS)) for name, make in found.items()}
        found["trained MLP"] = TrainedMLP
        found[f"{SHIPPED} + trained MLP"] = lambda: WithMLP(ShippedReadout())
        found["shrinkage LDA per stage + trained MLP"] = lambda: WithMLP(StageLDAs(sizes))
        found["bagged shrinkage LDA + trained MLP"] = lambda: WithMLP(BaggedLDA())
    return found


class WithoutLast:
    """A classifier of every column but the last ``n`` (the engine's features without the MLP's logits)."""

    def __init__(self, classifier, n: int):
        self.classifier, self.n = classifier, n

    def fit(self, x: np.ndarray, y: np.ndarray) -> WithoutLast:
        self.classifier.fit(x[:, : -self.n], y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classifier.predict(x[:, : -self.n])


class TrainedMLP:
    """The head's MLP as trained (its logits are the engine features' last three columns); fits nothing."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> TrainedMLP:
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(x[:, -MLP_LOGITS:], axis=1)


# the 8 flips of the three spatial axes (the "mirror" augmentation trains on all of them)
ALL_FLIPS = ((), *(c for n in (1, 2, 3) for c in itertools.combinations((0, 1, 2), n)))
# the sets the shipped readout is fitted on besides the training split (--fit-sets)
OTHER_FIT_SETS = {"train_flips": "training split under 8 flips", "train_validation": "training + validation splits"}


def candidate_fits(fit_sets: bool, sizes: list[int], mlp: bool) -> dict:
    """Name -> (classifier factory, fitting set): the readouts compared, the shipped one first."""
    if fit_sets:
        shipped = (lambda: WithoutLast(ShippedReadout(), MLP_LOGITS)) if mlp else ShippedReadout
        others = {f"{SHIPPED}, {name}": (shipped, key) for key, name in OTHER_FIT_SETS.items()}
        return {SHIPPED: (shipped, "train"), **others}
    return {name: (make, "train") for name, make in candidates(sizes, mlp).items()}


def features(
    model: Path, images: Path, truth: Path, cache: Path, flips: tuple[tuple[int, ...], ...] = ((),)
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """head_probe's pooled features of every case (rows), their subtypes, and the sizes of the feature blocks."""
    if cache.is_file():
        stored = np.load(cache)
        return stored["x"], stored["y"], stored["sizes"].tolist()
    rows = pooled_features(model, images, truth, flips=flips)
    x = np.stack([np.concatenate(case) for case in rows["learned"]])
    y = np.array(rows["subtype"])
    sizes = [len(block) for block in rows["learned"][0]]
    np.savez(cache, x=x, y=y, sizes=sizes)
    return x, y, sizes


def engine_features(model: Path, images: Path, truth: Path, cache: Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``predict``'s engine's head features of every case (checkpoint_best, on the path and mirroring the model
    chose, as the trainer fits its readout) followed by the trained MLP's logits; the subtypes; the sizes of
    the feature blocks. Checks that the shipped readout fitted now is the one installed: the engine's class
    logits are its logits."""
    if cache.is_file():
        stored = np.load(cache)
        return stored["x"], stored["y"], stored["sizes"].tolist()
    from nnunet_mtl.evaluation.evaluate import truth_subtypes
    from nnunet_mtl.inference.cases import find_input_cases
    from nnunet_mtl.inference.model import load_model
    from nnunet_mtl.inference.predictor import MultitaskPredictor

    loaded = load_model(model)
    choice = loaded.inference_choice
    predictor = MultitaskPredictor(loaded, tta=choice.mirroring, path=choice.path)
    head = predictor.model.networks[0].head
    subtypes = truth_subtypes(truth)
    rows, installed, y = [], [], []
    for case in find_input_cases(images):
        prediction = predictor.forward(predictor.preprocess(case).data)
        with torch.inference_mode():
            mlp = head.mlp(prediction.head_features[None].float())[0]
        rows.append(np.concatenate([prediction.head_features.numpy(), mlp.numpy()]))
        installed.append(prediction.class_logits.numpy())
        y.append(subtypes[case.name])
    sizes = [*head.stage_channels, rows[0].size - MLP_LOGITS - sum(head.stage_channels)]
    x, y = np.stack(rows).astype(np.float64), np.array(y)
    np.savez(cache, x=x, y=y, sizes=sizes, installed=np.stack(installed))
    return x, y, sizes


def _gaussian_cases(rng, means: np.ndarray, loading: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat(np.arange(len(means)), per_class)
    factors = rng.normal(0, 1, (len(y), len(loading)))
    return means[y] + factors @ loading + rng.normal(0, 1, (len(y), means.shape[1])), y


def synthetic_check(seeds: int = 6) -> dict:
    """The ensembles against the shipped LDA where the LDA's model holds: three Gaussian classes with one
    covariance (10 shared factors plus noise), 240 features, 12 training cases per class as in the phantom's
    training split, 600 test cases; the class means spread thinly over every feature, or through 8 directions
    only (redundant features). Mean test accuracy over ``seeds`` draws."""
    makers = {SHIPPED: ShippedReadout, "bagged": BaggedLDA, "random-subspace": SubspaceLDA}
    results = {}
    for means_kind in ("thin", "redundant"):
        scores = []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            loading = rng.normal(0, 1, (10, 240))
            if means_kind == "thin":
                means = rng.normal(0, 0.25, (3, 240))
            else:
                means = rng.normal(0, 1, (3, 8)) @ rng.normal(0, 1, (8, 240)) / np.sqrt(8) * 0.5
            (x, y), (x_test, y_test) = (_gaussian_cases(rng, means, loading, n) for n in (12, 200))
            scores.append([np.mean(make().fit(x, y).predict(x_test) == y_test) for make in makers.values()])
        results[means_kind] = dict(zip(makers, map(float, np.mean(scores, axis=0))))
        print(f"{means_kind} class means: " + ", ".join(f"{k} {v:.3f}" for k, v in results[means_kind].items()))
    return results


def main(argv=None) -> int:
    from sklearn.metrics import f1_score

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matrix", type=Path, help="accuracy_matrix.py's --out")
    parser.add_argument("--label")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--features",
        choices=("probe", "engine"),
        default="probe",
        help="head_probe's pooling of checkpoint_best (the stored results) or predict's engine (see above)",
    )
    parser.add_argument(
        "--fit-sets",
        action="store_true",
        help="the shipped readout fitted on other sets instead (training under 8 flips, training + validation)",
    )
    parser.add_argument(
        "--synthetic", action="store_true", help="only the ensembles on synthetic Gaussian data (synthetic_check)"
    )
    args = parser.parse_args(argv)
    if args.synthetic:
        synthetic_check()
        return 0
    if args.matrix is None or args.label is None:
        parser.error("--matrix and --label are required (or --synthetic)")
    torch.set_num_threads(2)
    engine = args.features == "engine"
    results, correct, fits = {}, {}, {}
    for run in sorted((args.matrix / args.label).iterdir()):
        if not (run / "result.json").is_file():
            continue
        model = next((run / "nnunet" / "nnUNet_results").glob("Dataset*/*__3d_fullres"))
        data = args.matrix / "data" / run.name
        featurise = engine_features if engine else features
        prefix = run / ("readout_features_engine" if engine else "readout_features")
        x_fit, y_fit, sizes = featurise(model, data / "train", data / "train", Path(f"{prefix}_train.npz"))
        x_test, y_test, _ = featurise(model, data / "test", data / "test_key", Path(f"{prefix}_test.npz"))
        fit_sets = {"train": (x_fit, y_fit)}
        if args.fit_sets:
            if engine:
                raise SystemExit("--fit-sets takes head_probe's features (--features probe)")
            flipped = run / "readout_features_train_flips.npz"
            fit_sets["train_flips"] = features(model, data / "train", data / "train", flipped, ALL_FLIPS)[:2]
            x_val, y_val, _ = features(
                model, data / "validation", data / "validation", run / "readout_features_validation.npz"
            )
            fit_sets["train_validation"] = (np.concatenate([x_fit, x_val]), np.concatenate([y_fit, y_val]))
        if engine:
            installed = np.load(f"{prefix}_test.npz")["installed"].argmax(1)
            shipped = WithoutLast(ShippedReadout(), MLP_LOGITS).fit(x_fit, y_fit).predict(x_test)
            agree = np.mean(installed == shipped)
            print(f"{run.name}: the shipped readout fitted here agrees with the installed one on {agree:.0%} of cases")
        fits = candidate_fits(args.fit_sets, sizes, engine)
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
        differences = [c.astype(float) - s for c, s in zip(correct[name], shipped)]
        paired[name] = paired_difference(differences, rng)
        mean = paired[name][0]
        print(f"{name} minus {SHIPPED}, subtype correct: {mean:+.3f} [{paired[name][1]:+.3f}, {paired[name][2]:+.3f}]")
    if args.out:
        args.out.write_text(json.dumps({"per_model": results, "paired_accuracy_vs_shipped": paired}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
