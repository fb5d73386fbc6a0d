"""``nnunet-mtl demo``: the whole product on the CT phantom, on a laptop CPU, in one command.

phantom -> prepare -> plan and train (``tiny`` preset) -> predict the test split -> evaluate against the
test key -> report. Everything, nnU-Net's folders included, lives under ``--out``: the demo never reads or
writes the user's own ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from nnunet_mtl.errors import InputError

DATASET_ID = 501
PRESET = "tiny"
MARKER = ".nnunet-mtl-demo"
STEPS = 6
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ")
_EPOCH = re.compile(r"^Epoch (\d+)\s*$")
_TRAIN_LOSS = re.compile(r"^train_loss \S+ \(segmentation (\S+) classification (\S+) \)")
_VALIDATION = re.compile(r"^whole-volume validation .*: (Dice whole .*)$")
_EPOCH_TIME = re.compile(r"^Epoch time: (\S+) s")


class EpochCondenser:
    """Turns nnU-Net's five-plus log lines per epoch into one line; passes our milestones through."""

    def __init__(self, num_epochs: int, emit: Callable[[str], None]):
        self.num_epochs = num_epochs
        self.emit = emit
        self.epoch: int | None = None
        self.losses = ""
        self.validation = ""
        self.best = False

    def feed(self, raw: str) -> None:
        line = _TIMESTAMP.sub("", raw.rstrip())
        if match := _EPOCH.match(line):
            self.epoch, self.losses, self.validation, self.best = int(match.group(1)), "", "", False
        elif match := _TRAIN_LOSS.match(line):
            self.losses = f"loss seg {float(match.group(1)):+.3f} cls {float(match.group(2)):.3f}"
        elif match := _VALIDATION.match(line):
            self.validation = match.group(1)
        elif line.startswith("new best combined metric"):
            self.best = True
        elif (match := _EPOCH_TIME.match(line)) and self.epoch is not None:
            text = f"  epoch {self.epoch + 1:>3}/{self.num_epochs}  {self.losses}  {float(match.group(1)):5.1f} s"
            if self.validation:
                text += f"  | validation: {self.validation}{'  (new best)' if self.best else ''}"
            self.emit(text)
        elif line.startswith(("phase 2:", "early stopping", "final validation", "Traceback")) or "Error" in line:
            self.emit(f"  {line}")


def _prepare_out(out: Path) -> None:
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file()):
            raise InputError(out, "exists and is not an earlier demo folder; give another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by nnunet-mtl demo; removed and rebuilt by the next demo run\n")


def _run(argv: list[str]) -> None:
    from nnunet_mtl.cli import main

    if main(argv) != 0:
        raise SystemExit(2)


def _train(out: Path, emit: Callable[[str], None]) -> Path:
    from nnunet_mtl.config import PRESETS
    from nnunet_mtl.inference.model import model_folder_for

    num_epochs = PRESETS[PRESET].config.schedule.num_epochs
    command = [sys.executable, "-m", "nnunet_mtl", "train", "--dataset-id", str(DATASET_ID), "--preset", PRESET]
    condenser = EpochCondenser(num_epochs, emit)
    log_path = out / "train.log"
    with (
        log_path.open("w") as log,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            condenser.feed(line)
    if process.returncode != 0:
        raise InputError(log_path, f"training failed (exit code {process.returncode}); see the log")
    return model_folder_for(DATASET_ID, PRESET)


def run_demo(out: Path, seed: int = 0, emit: Callable[[str], None] = print) -> dict:
    """Run every step; returns the test split's metrics (as metrics.json of ``evaluate``)."""
    import json

    out = Path(out).resolve()
    _prepare_out(out)
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[variable] = str(out / "nnunet" / variable)
    start = time.perf_counter()

    def step(number: int, text: str) -> None:
        emit(f"[{number}/{STEPS}] {text}  ({time.perf_counter() - start:.0f} s)")

    step(1, "phantom: a synthetic cropped abdominal CT data set in the assignment layout")
    phantom = out / "phantom"
    _run(["phantom", str(phantom), "--seed", str(seed)])
    step(2, "prepare: nnU-Net raw dataset with region labels; fold 0 = the original train/validation split")
    _run(["prepare", str(phantom), "--dataset-id", str(DATASET_ID)])
    step(3, f"train: nnU-Net planning and preprocessing, then the multitask nnU-Net ({PRESET} preset, CPU)")
    model_dir = _train(out, emit)
    step(4, "predict the test split: masks, subtype_results.csv")
    pred = out / "test_pred"
    _run(["predict", "--model-dir", str(model_dir), "-i", str(phantom / "test"), "-o", str(pred)])
    step(5, "evaluate against the test answer key")
    truth = phantom / "test_key"
    _run(["evaluate", "--pred", str(pred), "--truth", str(truth), "--out", str(out / "evaluation")])
    step(6, "report")
    sources = ["--model-dir", str(model_dir), "--pred", str(pred), "--truth", str(truth)]
    _run(["report", *sources, "--images", str(phantom / "test"), "--out", str(out / "report")])
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    emit(f"done in {time.perf_counter() - start:.0f} s")
    return metrics


def summary_table(metrics: dict) -> str:
    from nnunet_mtl.report.content import metrics_table

    table = metrics_table(metrics)
    rows = [table.header[:4], *(row[:4] for row in table.rows)]
    widths = [max(len(row[k]) for row in rows) for k in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
