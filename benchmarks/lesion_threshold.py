"""Does the lesion threshold chosen on validation help on the test split? Paired, on the same trained models.

    python benchmarks/lesion_threshold.py RUN [RUN ...] [--out RESULT.json]

RUN: one model folder of ``benchmarks/accuracy_matrix.py`` (``OUT/LABEL/SETTING-sSEED``; its phantom is
``OUT/data/SETTING-sSEED``), trained with region probabilities stored in its final validation. For each the
postprocessing is determined twice on the same validation predictions: with the lesion threshold among
``PostprocessingConfig.lesion_thresholds`` (as shipped) and with nnU-Net's 0.5 only (as before); the mask
steps are determined after the threshold in both. The test split is predicted with each (the model's own
inference choice) and scored; the per-case lesion Dice differences get a paired 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
RESAMPLES = 2000


def _scores(model, postprocessing, images: Path, truth: Path, out: Path) -> dict[str, dict]:
    from nnunet_mtl.evaluation.evaluate import evaluate_folder
    from nnunet_mtl.inference.cases import find_input_cases
    from nnunet_mtl.inference.predictor import MultitaskPredictor

    choice = model.inference_choice
    predictor = MultitaskPredictor(
        replace(model, postprocessing=postprocessing), tta=choice.mirroring, path=choice.path
    )
    predictor.predict_folder(find_input_cases(images), out)
    return {c.name: c.dice for c in evaluate_folder(out, truth).cases}


def compare(run: Path) -> dict:
    from nnunet_mtl.config import POSTPROCESSING
    from nnunet_mtl.inference.model import load_model
    from nnunet_mtl.postprocessing.determine import determine_for_folders

    data = run.parent.parent / "data" / run.name
    folder = next((run / "nnunet" / "nnUNet_results").glob("Dataset*/*__3d_fullres"))
    gt = next((run / "nnunet" / "nnUNet_preprocessed").glob("Dataset*/gt_segmentations"))
    validation = sorted(folder.glob("fold_*/validation"))
    variants = {
        "chosen": determine_for_folders(validation, gt),
        "0.5": determine_for_folders(validation, gt, replace(POSTPROCESSING, lesion_thresholds=(0.5,))),
    }
    model = load_model(folder)
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, postprocessing in variants.items():
            scores[name] = _scores(model, postprocessing, data / "test", data / "test_key", Path(tmp) / name)
    cases = sorted(scores["chosen"])
    result = {"run": str(run), "threshold": variants["chosen"].lesion_threshold}
    for name, postprocessing in variants.items():
        result[f"mask_steps_{name}"] = list(postprocessing.mask_steps)
    for region in ("lesion", "whole_pancreas"):
        chosen = np.array([scores["chosen"][c][region] for c in cases], dtype=float)
        half = np.array([scores["0.5"][c][region] for c in cases], dtype=float)
        keep = ~(np.isnan(chosen) | np.isnan(half))
        difference = chosen[keep] - half[keep]
        draws = np.random.default_rng(0).integers(0, len(difference), (RESAMPLES, len(difference)))
        result[region] = {
            "at_0.5": float(half[keep].mean()),
            "chosen": float(chosen[keep].mean()),
            "difference": [
                float(difference.mean()),
                *map(float, np.percentile(difference[draws].mean(1), [2.5, 97.5])),
            ],
            "missed_at_0.5": int((half[keep] == 0).sum()),
            "missed_chosen": int((chosen[keep] == 0).sum()),
        }
    lesion = result["lesion"]
    print(
        f"{run.name}: threshold {result['threshold']:g}, lesion Dice {lesion['at_0.5']:.3f} -> {lesion['chosen']:.3f} "
        f"(difference {lesion['difference'][0]:+.3f} [{lesion['difference'][1]:+.3f}, {lesion['difference'][2]:+.3f}]),"
        f" whole {result['whole_pancreas']['difference'][0]:+.4f}",
        flush=True,
    )
    return result


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
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
