"""Training killed with SIGKILL (once in the middle of a checkpoint write, once mid-epoch) resumes with
``--c`` and ends as an uninterrupted run would."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_mtl.data.layout import scan_assignment_data
from nnunet_mtl.training.distributed import inverse_frequency_weights
from tests.conftest import DATASET_ID, nnunet_env
from tests.training.ext_trainers.smoke_trainers import FAULTS, KILL_IN_SAVE
from tests.training.test_trainer import make_trainer

TRAINER = "nnUNetTrainerMultitaskFaults"
TIMEOUT_S = 300
EPOCH_LINE = re.compile(r"^\S+ \S+ Epoch (\d+)\s*$", re.MULTILINE)


def start_training(plans: str, log: Path, resume: bool, **env: str) -> subprocess.Popen:
    """``nnUNetv2_train`` in a session of its own, so that one killpg also ends its augmentation workers."""
    binary = Path(sys.executable).with_name("nnUNetv2_train")
    command = [str(binary), str(DATASET_ID), "3d_fullres", "0", "-tr", TRAINER, "-p", plans, "-device", "cpu"]
    command += ["--val_best", *(["--c"] if resume else [])]
    with log.open("w") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**nnunet_env(), **env}, start_new_session=True
        )


def wait_for(condition, process: subprocess.Popen, what: str, console: Path) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"training ended (code {process.returncode}) before {what}:\n{console.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"no {what} within {TIMEOUT_S} s")
        time.sleep(0.2)


def finish(process: subprocess.Popen, console: Path) -> int:
    try:
        return process.wait(TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"training did not end within {TIMEOUT_S} s:\n{console.read_text()[-3000:]}")


def epochs_started(log: Path) -> list[int]:
    return [int(e) for e in EPOCH_LINE.findall(log.read_text())] if log.is_file() else []


class Runs:
    """The training logs nnU-Net writes, one per run (named by the run's start time)."""

    def __init__(self, fold: Path):
        self.fold, self.seen = fold, set()

    def new_log(self) -> Path | None:
        logs = set(self.fold.glob("training_log_*.txt")) - self.seen
        return logs.pop() if len(logs) == 1 else None

    def close(self, log: Path) -> list[int]:
        self.seen.add(log)
        return epochs_started(log)


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".tmp-")]


@pytest.mark.slow
def test_training_killed_twice_resumes_and_ends_as_uninterrupted(planned_dataset, nnunet_root, small_phantom, tmp_path):
    name, plans = planned_dataset
    folder = nnunet_root / "nnUNet_results" / name / f"{TRAINER}__{plans}__3d_fullres"
    fold = folder / "fold_0"
    runs, epochs = Runs(fold), []

    # run 1: killed half-way through writing checkpoint_latest at the end of epoch 2
    console = tmp_path / "run1.txt"
    process = start_training(plans, console, resume=False, **{KILL_IN_SAVE: "2"})
    assert finish(process, console) == -signal.SIGKILL, console.read_text()[-3000:]
    epochs.append(runs.close(runs.new_log()))
    assert epochs[0] == [0, 1, 2]
    assert len(temp_files(fold)) == 1  # the half-written checkpoint, under its temporary name
    latest = torch.load(fold / "checkpoint_latest.pth", weights_only=True)  # the previous one, intact
    assert latest["current_epoch"] == 2

    # run 2: resumed, then killed from outside while epoch 3 ends (whole-volume validation, checkpoints)
    console = tmp_path / "run2.txt"
    process = start_training(plans, console, resume=True)

    def epoch_3_trained() -> bool:
        log = runs.new_log()
        lines = log.read_text().splitlines() if log is not None else []
        started = [i for i, line in enumerate(lines) if EPOCH_LINE.match(line) and line.split()[-1] == "3"]
        return bool(started) and any("train_loss" in line for line in lines[started[0] :])

    wait_for(epoch_3_trained, process, "the end of epoch 3", console)
    os.killpg(process.pid, signal.SIGKILL)
    assert finish(process, console) == -signal.SIGKILL
    epochs.append(runs.close(runs.new_log()))

    # run 3: resumed to the end (early stopping, then the final validation of checkpoint_best)
    console = tmp_path / "run3.txt"
    process = start_training(plans, console, resume=True)
    assert finish(process, console) == 0, console.read_text()[-3000:]
    last_log = runs.new_log()
    epochs.append(runs.close(last_log))

    # each resumed run starts at most one epoch behind the last epoch started before the kill
    for before, after in itertools.pairwise(epochs):
        assert after == list(range(after[0], after[0] + len(after)))
        assert max(before) - 1 <= after[0] <= max(before) + 1, epochs
    lost = [max(before) + 1 - after[0] for before, after in itertools.pairwise(epochs)]
    print(f"epochs started per run {epochs}; epochs redone after each kill {lost}")
    assert sorted({e for run in epochs for e in run}) == [0, 1, 2, 3, 4]

    # the state an uninterrupted run ends with: best at epoch 1, early stop before epoch 5, phase 2 from epoch 2
    final = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    state, logging = final["multitask"], final["logging"]
    assert final["current_epoch"] == 5
    assert {len(values) for values in logging.values()} == {5}
    assert logging["phase"] == [1 if e < FAULTS.loss.phase1_epochs else 2 for e in range(5)]
    assert [e for e, v in enumerate(logging["wv_combined"]) if not np.isnan(v)] == [1, 3]
    assert state["best_epoch"] == 1 and state["best_metric"] == logging["wv_combined"][1]
    assert np.all(np.diff(logging["epoch_start_timestamps"]) > 0)
    counts = np.bincount([c.subtype for c in scan_assignment_data(small_phantom).train], minlength=3).tolist()
    expected = inverse_frequency_weights(counts, FAULTS.loss.class_weight_smoothing)
    assert torch.allclose(torch.tensor(state["class_weights"]), expected)
    assert re.search(r"early stopping: no better combined metric for 4 epochs .* at epoch 1", last_log.read_text())
    best = torch.load(fold / "checkpoint_best.pth", weights_only=True)
    assert best["current_epoch"] == 2 and best["multitask"]["best_epoch"] == 1
    assert {len(values) for values in best["logging"].values()} == {2}  # its epoch complete, metrics included
    assert not (fold / "checkpoint_latest.pth").exists()
    assert (fold / "validation" / "subtype_results.csv").is_file()
    assert temp_files(folder) == []


def test_continue_takes_checkpoint_best_when_newer_than_latest(smoke_model, planned_dataset, nnunet_root, tmp_path):
    """A kill between the two saves of an epoch leaves checkpoint_best one epoch ahead of checkpoint_latest."""
    final = torch.load(smoke_model[0] / "fold_0" / "checkpoint_final.pth", weights_only=True)
    latest, best = tmp_path / "checkpoint_latest.pth", tmp_path / "checkpoint_best.pth"
    torch.save({**final, "current_epoch": 2}, latest)
    torch.save({**final, "current_epoch": 3}, best)
    trainer = make_trainer(nnunet_root, planned_dataset, continue_training=True)
    trainer.load_checkpoint(str(latest))
    assert trainer.current_epoch == 3
    torch.save({**final, "current_epoch": 1}, best)
    trainer.load_checkpoint(str(latest))
    assert trainer.current_epoch == 2
