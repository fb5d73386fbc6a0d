"""Accuracy on a family of phantom settings: train a preset on each (setting, seed), predict its test split,
score it with bootstrap intervals. The results matrix of README ("Accuracy across phantom settings").

    python benchmarks/accuracy_matrix.py --out /tmp/matrix --label after
    python benchmarks/accuracy_matrix.py --out /tmp/matrix --label before --code /path/to/old/src
    python benchmarks/accuracy_matrix.py --out /tmp/matrix --label revalidated --revalidate before

``--paired-postprocessing KEY=VALUE`` also predicts each test split with that entry of the model folder's
postprocessing file changed (restored afterwards), on the same weights, as label ``LABEL-KEY=VALUE`` (for
``paired_runs.py``): e.g. ``lesion_threshold=0.5`` (nnU-Net's cut where the model chose another); on a label
trained before, it only adds that.

``--revalidate LABEL`` trains nothing: it copies LABEL's trained models and runs ``train --validation-only``
with this code (the subtype readout, the inference choice and the postprocessing are determined again on the
same weights), then predicts and scores as usual: a paired comparison of what happens after training, free
of the training's run-to-run noise. Its training time and epochs are LABEL's.

Every (setting, seed) trains in nnU-Net folders of its own under OUT/LABEL/; the phantoms are written once
under OUT/data/ and shared by every label, so "before" and "after" see the same cases. ``--code`` trains,
predicts and evaluates with another checkout's package (its ``src`` folder); the phantoms always come from
this checkout. Training time is nnU-Net's "Epoch 0" to "Training done" in the log; wall time includes
planning and preprocessing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
SETTINGS = {
    "default": {"shape": "32,48,48"},
    "real-size": {"shape": "64,119,179"},
    "small-lesions": {"shape": "32,48,48", "lesion_share": 0.04},
    "both": {"shape": "64,119,179", "lesion_share": 0.04},
}
BOOTSTRAP_RESAMPLES = 2000
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+): (.*)$")


def _run(args: list[str], env: dict, log: Path) -> float:
    start = time.perf_counter()
    with log.open("a") as handle:
        handle.write(f"$ nnunet-mtl {' '.join(args)}\n")
        handle.flush()
        result = subprocess.run([sys.executable, "-m", "nnunet_mtl", *args], env=env, stdout=handle, stderr=handle)
    if result.returncode != 0:
        raise RuntimeError(f"nnunet-mtl {args[0]} failed ({result.returncode}); see {log}")
    return time.perf_counter() - start


def make_phantom(out: Path, setting: str, seed: int, test: int) -> Path:
    folder = out / "data" / f"{setting}-s{seed}"
    if (folder / "phantom.json").is_file():
        return folder
    options = SETTINGS[setting]
    args = ["phantom", str(folder), "--seed", str(seed), "--test", str(test), "--shape", options["shape"]]
    if "lesion_share" in options:
        args += ["--lesion-share", str(options["lesion_share"])]
    _run(args, {**os.environ, "PYTHONPATH": str(SRC)}, out / "data.log")
    return folder


def training_seconds(log_text: str) -> tuple[float | None, int]:
    """Seconds from nnU-Net's "Epoch 0" to "Training done", and the number of epochs run."""
    start = end = None
    epochs = 0
    for line in log_text.splitlines():
        match = _STAMP.match(line)
        if not match:
            continue
        stamp, text = datetime.fromisoformat(match.group(1)), match.group(2).strip()
        if text == "Epoch 0" and start is None:
            start = stamp
        if re.fullmatch(r"Epoch \d+", text):
            epochs += 1
        if text == "Training done.":
            end = stamp
    return ((end - start).total_seconds() if start and end else None), epochs


def bootstrap(metrics: dict, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict:
    """Mean Dice per region and macro F1 with 95% bootstrap intervals over the test cases."""
    from sklearn.metrics import f1_score

    cases = metrics["cases"]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(cases), (resamples, len(cases)))
    summary = {}
    for key in ("dice_whole_pancreas", "dice_lesion"):
        values = np.array([np.nan if c[key] is None else c[key] for c in cases], dtype=float)
        means = np.nanmean(values[draws], axis=1)
        summary[key] = [float(np.nanmean(values)), *map(float, np.percentile(means, [2.5, 97.5]))]
    truth = np.array([c["subtype_true"] for c in cases])
    predicted = np.array([c["subtype_pred"] for c in cases])
    scores = [f1_score(truth[d], predicted[d], average="macro", zero_division=0) for d in draws]
    summary["macro_f1"] = [
        float(f1_score(truth, predicted, average="macro")),
        *map(float, np.percentile(scores, [2.5, 97.5])),
    ]
    summary["accuracy"] = float(np.mean(truth == predicted))
    return summary


def _model_args(preset: str, *extra: str) -> list[str]:
    return ["--dataset-id", "501", "--preset", preset, *extra]


def predict_and_score(
    model: list[str], data: Path, pred: Path, evaluation: Path, env: dict, log: Path
) -> tuple[float, dict]:
    """``predict`` the test split with ``model``'s arguments, then ``evaluate`` it: (predict's wall time, metrics)."""
    wall = _run(["predict", *model, "-i", str(data / "test"), "-o", str(pred)], env, log)
    _run(["evaluate", "--pred", str(pred), "--truth", str(data / "test_key"), "--out", str(evaluation)], env, log)
    return wall, json.loads((evaluation / "metrics.json").read_text())


def paired_folder(out: Path, label: str, change: str, folder: Path) -> Path:
    """Where ``folder``'s prediction with the postprocessing ``change`` goes: label ``LABEL-KEY=VALUE``."""
    return out / f"{label}-{change}" / folder.name


def paired_postprocessing_run(
    out: Path, label: str, folder: Path, change: str, data: Path, preset: str, env: dict, log: Path, result: dict
) -> None:
    """``folder``'s model predicts the test split with one postprocessing entry changed (restored afterwards),
    scored as label ``LABEL-KEY=VALUE``."""
    paired = paired_folder(out, label, change, folder)
    paired.mkdir(parents=True, exist_ok=True)
    key, _, value = change.partition("=")
    (post_file,) = (folder / "nnunet" / "nnUNet_results").rglob("nnunet_mtl_postprocessing.json")
    original = post_file.read_text()
    try:
        post_file.write_text(json.dumps({**json.loads(original), key: json.loads(value)}))
        _, metrics = predict_and_score(_model_args(preset), data, paired / "test_pred", paired / "evaluation", env, log)
    finally:
        post_file.write_text(original)
    paired_result = {**result, "label": paired.parent.name, "test": bootstrap(metrics)}
    (paired / "result.json").write_text(json.dumps(paired_result, indent=2) + "\n")


def run_one(
    out: Path,
    label: str,
    setting: str,
    seed: int,
    preset: str,
    code: Path,
    test: int,
    revalidate: str | None = None,
    paired_postprocessing: str | None = None,
) -> dict:
    data = make_phantom(out, setting, seed, test)
    folder = out / label / f"{setting}-s{seed}"
    result_file = folder / "result.json"
    env = {**os.environ, "PYTHONPATH": str(code)}
    env.update(
        {name: str(folder / "nnunet" / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    )
    log = folder / "run.log"
    if result_file.is_file():  # trained and scored before: only a paired prediction not made yet
        result = json.loads(result_file.read_text())
        if (
            paired_postprocessing is not None
            and not (paired_folder(out, label, paired_postprocessing, folder) / "result.json").is_file()
        ):
            paired_postprocessing_run(out, label, folder, paired_postprocessing, data, preset, env, log, result)
        return result
    folder.mkdir(parents=True, exist_ok=True)
    if revalidate is None:
        _run(["prepare", str(data), "--dataset-id", "501"], env, log)
        wall = _run(["train", "--dataset-id", "501", "--preset", preset], env, log)
        logs = sorted((folder / "nnunet" / "nnUNet_results").rglob("training_log_*.txt"))
        seconds, epochs = training_seconds("".join(p.read_text() for p in logs))
    else:
        source = out / revalidate / folder.name
        trained = json.loads((source / "result.json").read_text())
        shutil.rmtree(folder / "nnunet", ignore_errors=True)
        shutil.copytree(source / "nnunet", folder / "nnunet")
        wall = _run(["train", "--dataset-id", "501", "--preset", preset, "--validation-only"], env, log)
        seconds, epochs = trained["training_seconds"], trained["epochs"]
    model = _model_args(preset)
    predict_wall, metrics = predict_and_score(model, data, folder / "test_pred", folder / "evaluation", env, log)
    final_metrics = None
    if revalidate is None:  # --validation-only leaves checkpoint_final as it was
        final = folder / "test_pred_final"  # is the selected checkpoint worse than the last one?
        model_final = _model_args(preset, "--checkpoint", "final")
        _, final_metrics = predict_and_score(model_final, data, final, final / "evaluation", env, log)
    validation = sorted((folder / "nnunet" / "nnUNet_results").rglob("validation/metrics.json"))
    result = {
        "setting": setting,
        "seed": seed,
        "label": label,
        "preset": preset,
        "num_test_cases": metrics["num_cases"],
        "test": bootstrap(metrics),
        "test_final_checkpoint": final_metrics and bootstrap(final_metrics),
        "validation": json.loads(validation[0].read_text()) if validation else None,
        "training_seconds": seconds,
        "epochs": epochs,
        "train_wall_seconds": wall,
        "predict_wall_seconds": predict_wall,
    }
    result["validation"] = result["validation"] and {
        "dice_whole_pancreas": result["validation"]["segmentation"]["whole_pancreas"]["mean_dice"],
        "dice_lesion": result["validation"]["segmentation"]["lesion"]["mean_dice"],
        "macro_f1": (result["validation"]["classification"] or {}).get("macro_f1"),
    }
    if paired_postprocessing is not None:
        paired_postprocessing_run(out, label, folder, paired_postprocessing, data, preset, env, log, result)
    result_file.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _cell(values: list[float]) -> str:
    return f"{values[0]:.3f} [{values[1]:.3f}, {values[2]:.3f}]"


def markdown(results: list[dict]) -> str:
    lines = [
        "| setting | seed | whole Dice [95% CI] | lesion Dice [95% CI] | macro F1 [95% CI] | accuracy | training "
        "| epochs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["test"]
        minutes = "-" if r["training_seconds"] is None else f"{r['training_seconds'] / 60:.1f} min"
        lines.append(
            f"| {r['setting']} | {r['seed']} | {_cell(t['dice_whole_pancreas'])} | {_cell(t['dice_lesion'])} | "
            f"{_cell(t['macro_f1'])} | {t['accuracy']:.3f} | {minutes} | {r['epochs']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--label", default="after", help="a name for this code version's results (before, after)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--test", type=int, default=36, help="test cases per phantom (default 36)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--code", type=Path, default=SRC, help="src folder of the checkout to train with")
    parser.add_argument("--data-only", action="store_true", help="only write the phantoms")
    parser.add_argument(
        "--revalidate", metavar="LABEL", help="no training: LABEL's models, validated again by this code (above)"
    )
    parser.add_argument(
        "--paired-postprocessing", metavar="KEY=VALUE", help="also predict with this postprocessing entry (above)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for setting in args.settings:
        for seed in args.seeds:
            if args.data_only:
                make_phantom(args.out, setting, seed, args.test)
                continue
            results.append(
                run_one(
                    args.out,
                    args.label,
                    setting,
                    seed,
                    args.preset,
                    args.code.resolve(),
                    args.test,
                    args.revalidate,
                    args.paired_postprocessing,
                )
            )
            print(markdown(results[-1:]).splitlines()[-1], flush=True)
    if results:
        table = markdown(results)
        (args.out / args.label / "matrix.md").write_text(table + "\n")
        (args.out / args.label / "matrix.json").write_text(json.dumps(results, indent=2) + "\n")
        print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
