"""Does the subtype readout have to be fitted on the inference path it classifies?

    python benchmarks/readout_paths.py RUN [RUN ...] [--out RESULT.json]

RUN: one model folder of ``benchmarks/accuracy_matrix.py`` (``OUT/LABEL/SETTING-sSEED``; its phantom is
``OUT/data/SETTING-sSEED``). For each of three paths of ``predict``'s engine (one pass; one pass + the 8
mirrorings; stock's sliding window + mirrorings) the head's features of every training and test case
(``CasePrediction.head_features`` of checkpoint_best); then the shipped readout (``fit_readout``) fitted on
each path's training features and scored, macro F1, on each path's test features: 3 x 3 per model. The
diagonal is a readout fitted on the path it classifies; the off-diagonal is what a readout fitted on one
path gives on another.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
PATHS = {"one pass": (False, "auto"), "one pass + mirroring": (True, "auto"), "stock": (True, "sliding")}


def path_features(predictor, images: Path, truth: Path) -> tuple[np.ndarray, np.ndarray]:
    from nnunet_mtl.evaluation.evaluate import truth_subtypes
    from nnunet_mtl.inference.cases import find_input_cases

    subtypes = truth_subtypes(truth)
    rows, y = [], []
    for case in find_input_cases(images):
        rows.append(predictor.forward(predictor.preprocess(case).data).head_features.numpy())
        y.append(subtypes[case.name])
    return np.stack(rows).astype(np.float64), np.array(y)


def compare(run: Path) -> dict:
    from sklearn.metrics import f1_score

    from nnunet_mtl.inference.model import load_model
    from nnunet_mtl.inference.predictor import MultitaskPredictor
    from nnunet_mtl.training.readout import fit_readout

    data = run.parent.parent / "data" / run.name
    model = load_model(next((run / "nnunet" / "nnUNet_results").glob("Dataset*/*__3d_fullres")))
    features = {}
    for name, (mirroring, path) in PATHS.items():
        predictor = MultitaskPredictor(model, tta=mirroring, path=path)
        features[name] = (
            path_features(predictor, data / "train", data / "train"),
            path_features(predictor, data / "test", data / "test_key"),
        )
    table = {}
    for fitted_on, ((x, y), _) in features.items():
        readout = fit_readout(x, y, 3)
        table[fitted_on] = {}
        for scored_on, (_, (x_test, y_test)) in features.items():
            predicted = (x_test @ readout.weight.T + readout.bias).argmax(1)
            table[fitted_on][scored_on] = float(f1_score(y_test, predicted, average="macro"))
            print(
                f"{run.name}: fitted on {fitted_on:21s} scored on {scored_on:21s} macro F1 "
                f"{table[fitted_on][scored_on]:.3f}",
                flush=True,
            )
    return {"run": str(run), "chosen": model.inference_choice.name, "macro_f1": table}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(SRC))
    import torch

    torch.set_num_threads(2)
    results = [compare(run) for run in args.runs]
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
