"""``nnunet-mtl demo``: the whole product on the CT phantom, on a laptop CPU, in one command.

phantom -> prepare -> plan and train (``tiny`` preset) -> predict the test split -> evaluate against the
test key -> report. Everything, nnU-Net's folders included, lives under ``--out``: the demo never reads or
writes the user's own ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results``.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from nnunet_mtl.console import progress_bar
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
_BUDGET = re.compile(r"^time budget \S+ min: (\d+) epochs")


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
        elif match := _BUDGET.match(line):  # the time budget sizes the schedule as training goes
            self.num_epochs = int(match.group(1))
        elif (match := _EPOCH_TIME.match(line)) and self.epoch is not None:
            # the trainer logs the budget's epoch count only when it moves by more than one
            total = max(self.num_epochs, self.epoch + 1)
            text = f"  epoch {self.epoch + 1:>3}/{total}  {self.losses}  {float(match.group(1)):5.1f} s"
            if self.validation:
                text += f"  | validation: {self.validation}{'  (new best)' if self.best else ''}"
            self.emit(text)
        elif (
            line.startswith(
                (
                    "phase 2:",
                    "early stopping",
                    "inference chosen",
                    "subtype readout",
                    "final validation",
                    "CPU plan",
                    "Traceback",
                )
            )
            or "Error" in line
        ):
            self.emit(f"  {line}")


def _prepare_out(out: Path) -> None:
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file()):
            raise InputError(out, "exists and is not an earlier demo folder; give another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by nnunet-mtl demo; removed and rebuilt by the next demo run\n")


def _train_in_child(log_path: str, dataset_id: int, preset: str) -> None:
    """Run in a spawned process: all of nnU-Net's output (this process's and its workers') goes to the log."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
        os.dup2(log, stream.fileno())
        stream.reconfigure(line_buffering=True)
    from nnunet_mtl.training.run import train

    try:
        train(dataset_id, preset=preset)
    except InputError as err:
        print(f"nnunet-mtl: error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None


def _follow(path: Path, process, feed: Callable[[str], None], poll_seconds: float = 0.2) -> None:
    """Feed every complete line that ``process`` writes to ``path`` until it has ended."""
    pending = ""
    with path.open() as log:
        while True:
            running = process.is_alive()  # read after this check: what it wrote before ending is read too
            *lines, pending = (pending + log.read()).split("\n")
            for line in lines:
                feed(line)
            if not running:
                break
            time.sleep(poll_seconds)
    if pending:
        feed(pending)


def _train(out: Path, emit: Callable[[str], None]) -> Path:
    """Train in a fresh process whose whole output is ``train.log``; one line per epoch reaches ``emit``."""
    from nnunet_mtl.config import PRESETS
    from nnunet_mtl.paths import preset_model_folder

    log_path = out / "train.log"
    log_path.touch()
    condenser = EpochCondenser(PRESETS[PRESET].config.schedule.num_epochs, emit)
    process = multiprocessing.get_context("spawn").Process(
        target=_train_in_child, args=(str(log_path), DATASET_ID, PRESET)
    )
    process.start()
    try:
        _follow(log_path, process, condenser.feed)
    finally:
        if process.is_alive():  # interrupted: do not leave the training behind
            process.terminate()
        process.join()
    if process.exitcode != 0:
        raise InputError(log_path, f"training failed (exit code {process.exitcode}); see the log")
    return preset_model_folder(DATASET_ID, PRESET)


def run_demo(out: Path, seed: int = 0, emit: Callable[[str], None] = print) -> dict:
    """Run every step; returns the test split's metrics (as metrics.json of ``evaluate``)."""
    from nnunet_mtl.data.phantom import PhantomSpec, generate_phantom
    from nnunet_mtl.data.prepare import prepare_dataset
    from nnunet_mtl.evaluation.outputs import evaluate_to_folder
    from nnunet_mtl.inference.run import predict
    from nnunet_mtl.report.build import build_report, collect_sources

    out = Path(out).resolve()
    _prepare_out(out)
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[variable] = str(out / "nnunet" / variable)
    start = time.perf_counter()

    def step(number: int, text: str) -> None:
        emit(f"[{number}/{STEPS}] {text}  ({time.perf_counter() - start:.0f} s)")

    step(1, "phantom: a synthetic cropped abdominal CT data set in the assignment layout")
    phantom = generate_phantom(out / "phantom", PhantomSpec(seed=seed), progress=progress_bar)
    step(2, "prepare: nnU-Net raw dataset with region labels; fold 0 = the original train/validation split")
    prepare_dataset(phantom, DATASET_ID, progress=progress_bar)
    step(3, f"train: nnU-Net planning and preprocessing, then the multitask nnU-Net ({PRESET} preset, CPU)")
    model_dir = _train(out, emit)
    step(4, "predict the test split: masks, subtype_results.csv")
    pred = out / "test_pred"
    predict(phantom / "test", pred, model_dir, progress=progress_bar)
    step(5, "evaluate against the test answer key")
    truth = phantom / "test_key"
    evaluation, _ = evaluate_to_folder(pred, truth, out_dir=out / "evaluation")
    step(6, "report")
    build_report(
        collect_sources(model_dir, pred_dir=pred, truth_dir=truth, images_dir=phantom / "test"), out / "report"
    )
    emit(f"done in {time.perf_counter() - start:.0f} s")
    return evaluation.to_json()


def summary_table(metrics: dict) -> str:
    from nnunet_mtl.report.content import metrics_table

    table = metrics_table(metrics)
    rows = [table.header[:5], *(row[:5] for row in table.rows)]  # metric, target, achieved, 95% CI, met
    widths = [max(len(row[k]) for row in rows) for k in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
