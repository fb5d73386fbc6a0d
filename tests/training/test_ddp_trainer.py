"""The trainer under nnU-Net's DDP runner, 2 gloo processes on the CPU (tests/training/ddp_gloo.py), and the
checks that keep a DDP run from starting wrong."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunet_mtl.errors import InputError
from nnunet_mtl.inference.choice import read_inference_choice
from nnunet_mtl.training.distributed import RankSampling, rank_sampling
from nnunet_mtl.training.planning import check_planned_run
from nnunet_mtl.training.subtypes import SubtypeMap, UnknownCaseError
from tests.conftest import DATASET_ID, nnunet_env
from tests.training.test_trainer import make_trainer

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 400


def run_gloo(plans: str, trainer: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**nnunet_env(), "nnUNet_n_proc_DA": "0"}
    command = [sys.executable, "-m", "tests.training.ddp_gloo", str(DATASET_ID), plans, trainer]
    start = time.monotonic()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    return result, time.monotonic() - start


def model_fold(nnunet_root: Path, name: str, plans: str, trainer: str) -> Path:
    return nnunet_root / "nnUNet_results" / name / f"{trainer}__{plans}__3d_fullres" / "fold_0"


@pytest.mark.slow
def test_ddp_training_splits_gathers_saves_on_rank0_and_stops_early_on_every_rank(planned_dataset, nnunet_root):
    name, plans = planned_dataset
    result, seconds = run_gloo(plans, "nnUNetTrainerMultitaskGloo")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"2-rank gloo training and final validation: {seconds:.0f} s")
    fold = model_fold(nnunet_root, name, plans, "nnUNetTrainerMultitaskGloo")
    ranks = [json.loads((fold / f"ddp_rank{r}.json").read_text()) for r in range(2)]
    validation_keys = load_json(nnunet_root / "nnUNet_preprocessed" / name / "splits_final.json")[0]["val"]

    # the validation cases split over the ranks, every case on exactly one, at every validation
    for per_epoch in zip(ranks[0]["validated"], ranks[1]["validated"]):
        assert per_epoch[0] and per_epoch[1] and not set(per_epoch[0]) & set(per_epoch[1])
        assert sorted(per_epoch[0] + per_epoch[1]) == sorted(validation_keys)
    # gathered: both ranks computed the same metrics, so both stopped early after epoch 1 (patience 2), and
    # both made the same inference choice at the end: every candidate it ran, then the final validation with it
    tried = read_inference_choice(fold.parent, [0]).determined_on["candidates"]
    assert ranks[0]["combined"] == ranks[1]["combined"] and len(ranks[0]["combined"]) == 2 + len(tried) + 1
    assert ranks[0]["epochs"] == ranks[1]["epochs"] == 2
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "early stopping" in log
    # saved on rank 0 only; the final validation on both ranks ran the weights of checkpoint_best
    assert not (fold / "checkpoint_writes_rank1.txt").exists()
    writes = (fold / "checkpoint_writes_rank0.txt").read_text().split()
    assert {"checkpoint_best.pth", "checkpoint_final.pth"} <= set(writes)
    best = torch.load(fold / "checkpoint_best.pth", weights_only=True)["network_weights"]
    best_sum = sum(float(v.double().sum()) for v in best.values())
    assert ranks[0]["weights_sum"] == pytest.approx(best_sum) and ranks[1]["weights_sum"] == pytest.approx(best_sum)
    # the subtype readout: every rank featurised its share of the training cases, gathered all, fitted the same
    assert bool(best["head.readout_fitted"])
    assert ranks[0]["readout"] == ranks[1]["readout"] == pytest.approx(best["head.readout_weight"].flatten().tolist())
    train_keys = load_json(nnunet_root / "nnUNet_preprocessed" / name / "splits_final.json")[0]["train"]
    assert f"fitted on the head's features of {len(train_keys)} training cases" in log
    metrics = json.loads((fold / "validation" / "metrics.json").read_text())
    assert sorted(c["name"] for c in metrics["cases"]) == sorted(validation_keys)
    assert all((fold / "validation" / f"{key}.nii.gz").is_file() for key in validation_keys)
    # the plan's batch of 2 split 1 + 1; both ranks draw foreground with the global batch's share (nnU-Net: 0 / 1)
    for rank in ranks:
        assert (rank["batch_size"], rank["oversample"], rank["probabilistic"]) == (1, 0.5, True)
    assert sum(ranks[0]["foreground_patches"]) > 0


@pytest.mark.slow
def test_an_error_on_one_rank_ends_every_rank_promptly(planned_dataset, nnunet_root):
    name, plans = planned_dataset
    result, seconds = run_gloo(plans, "nnUNetTrainerMultitaskGlooFail")
    print(f"2-rank gloo run with rank 1 failing in epoch 1: ended after {seconds:.0f} s")
    assert result.returncode != 0
    assert "rank 1: RuntimeError: injected failure on rank 1 (ending this rank)" in result.stderr
    assert seconds < 180  # gloo's collective timeout is 30 minutes
    fold = model_fold(nnunet_root, name, plans, "nnUNetTrainerMultitaskGlooFail")
    assert not list(fold.glob("ddp_rank*.json"))  # no rank went on to the final validation


@pytest.mark.parametrize(
    ("batch", "world", "percent", "expected"),
    [
        (2, 2, 0.33, [RankSampling(1, 0.5, True)] * 2),  # nnU-Net: rank 0 never foreground, rank 1 always
        (2, 2, 1.0, [RankSampling(1, 1.0, False)] * 2),
        (4, 2, 0.5, [RankSampling(2, 0.5, False)] * 2),
        (5, 2, 0.33, [RankSampling(3, 0.4, True), RankSampling(2, 0.4, True)]),  # 2 of 5 foreground
        (2, 1, 0.33, [RankSampling(2, 0.5, False)]),
    ],
)
def test_every_rank_draws_the_global_batchs_foreground_share(batch, world, percent, expected):
    assert [rank_sampling(batch, world, r, percent) for r in range(world)] == expected


def test_more_gpus_than_the_plans_batch_is_a_one_line_error(planned_dataset):
    name, plans = planned_dataset
    batch = load_json(Path(nnunet_env()["nnUNet_preprocessed"]) / name / f"{plans}.json")["configurations"][
        "3d_fullres"
    ]["batch_size"]
    check_planned_run(name, plans, 0, batch)
    with pytest.raises(InputError, match=rf"--num-gpus {batch + 1} is larger than the plan's batch size {batch}"):
        check_planned_run(name, plans, 0, batch + 1)


def test_a_validation_case_without_subtype_stops_training_before_the_first_epoch(planned_dataset, nnunet_root):
    trainer = make_trainer(nnunet_root, planned_dataset)
    _, val_keys = trainer.do_split()
    full = trainer.subtypes
    trainer._subtypes = SubtypeMap({k: v for k, v in full.subtypes.items() if k != val_keys[0]}, full.path)
    with pytest.raises(UnknownCaseError, match=rf"1 case\(s\) of the validation split of fold 0 .*: {val_keys[0]}$"):
        trainer.on_train_start()
    assert trainer.dataloader_train is None  # refused before nnU-Net built anything
