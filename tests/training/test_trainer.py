import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunet_mtl.cli import main
from nnunet_mtl.config import POSTPROCESSING, TINY
from nnunet_mtl.data.layout import scan_assignment_data
from nnunet_mtl.inference.choice import read_inference_choice
from nnunet_mtl.postprocessing.components import STEPS, apply_steps
from nnunet_mtl.postprocessing.lesion_threshold import (
    QUANTA,
    read_region_probabilities,
    region_probabilities_path,
    thresholded_labels,
)
from nnunet_mtl.postprocessing.plan import POSTPROCESSING_FILE, read_postprocessing
from nnunet_mtl.training.distributed import inverse_frequency_weights
from nnunet_mtl.training.postprocess import determine_for_model
from nnunet_mtl.training.subtypes import UnknownCaseError
from tests.conftest import run_nnunet
from tests.training.ext_trainers.smoke_trainers import (
    BUDGET,
    SMOKE,
    nnUNetTrainerMultitaskBudget,
    nnUNetTrainerMultitaskScratch,
    nnUNetTrainerMultitaskSmoke,
    nnUNetTrainerMultitaskStopEarly,
)


def make_trainer(nnunet_root, planned_dataset, cls=nnUNetTrainerMultitaskSmoke, continue_training=False):
    name, plans_identifier = planned_dataset
    folder = nnunet_root / "nnUNet_preprocessed" / name
    plans = {**load_json(folder / f"{plans_identifier}.json"), "continue_training": continue_training}
    return cls(plans, "3d_fullres", 0, load_json(folder / "dataset.json"), device=torch.device("cpu"))


def test_trained_through_nnunet_cli(smoke_model, small_phantom):
    folder, _ = smoke_model
    fold = folder / "fold_0"
    for name in ("checkpoint_final.pth", "checkpoint_best.pth", "progress.png"):
        assert (fold / name).is_file(), name
    assert (folder / "subtypes.json").is_file()
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert log.count("whole-volume validation (3 cases)") >= 3
    assert "phase 2: joint training" in log
    # final validation: masks in the original geometry, subtype CSV, our metrics
    validation = fold / "validation"
    data = scan_assignment_data(small_phantom)
    assert (validation / "subtype_results.csv").read_text().startswith("Names,Subtype\n")
    metrics = json.loads((validation / "metrics.json").read_text())
    assert {c["name"] for c in metrics["cases"]} == {c.name for c in data.validation}
    for case in data.validation:
        truth = sitk.ReadImage(str(case.mask))
        mask = sitk.ReadImage(str(validation / f"{case.name}.nii.gz"))
        assert mask.GetSize() == truth.GetSize() and np.allclose(mask.GetSpacing(), truth.GetSpacing())
        assert np.allclose(mask.GetOrigin(), truth.GetOrigin()) and mask.GetDirection() == truth.GetDirection()


def test_postprocessing_is_determined_after_training_and_again_on_demand(
    smoke_model, planned_dataset, nnunet_root, tmp_path, capsys
):
    folder, _ = smoke_model
    stored = json.loads((folder / POSTPROCESSING_FILE).read_text())
    assert [s["step"] for s in stored["determined_on"]["mask_steps"]] == list(STEPS)
    assert stored["determined_on"]["cases"] == 3 and stored["temperature"] > 0
    # the final validation again, postprocessed, with its metrics, and the same subtypes
    validation = folder / "fold_0" / "validation"
    after = json.loads((validation / "postprocessed" / "metrics.json").read_text())
    before = json.loads((validation / "metrics.json").read_text())
    assert [c["subtype_pred"] for c in after["cases"]] == [c["subtype_pred"] for c in before["cases"]]
    kept = stored["mask_steps"]
    if not kept and stored["lesion_threshold"] == 0.5:  # nothing kept: the masks are the validation's own
        assert after["segmentation"] == before["segmentation"]
    # the lesion threshold is chosen among the candidates on the region probabilities stored with each mask
    assert [r["threshold"] for r in stored["determined_on"]["lesion_threshold"]] == sorted(
        POSTPROCESSING.lesion_thresholds
    )
    for case in before["cases"]:
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(validation / f"{case['name']}.nii.gz")))
        regions = read_region_probabilities(region_probabilities_path(validation, case["name"]))
        assert regions.shape == (2, *mask.shape)
        assert np.mean(thresholded_labels(regions, 0.5, QUANTA) == mask) > 0.999  # the same cut, to 1/255
        postprocessed = sitk.GetArrayFromImage(
            sitk.ReadImage(str(validation / "postprocessed" / f"{case['name']}.nii.gz"))
        )
        expected = (
            thresholded_labels(regions, stored["lesion_threshold"], QUANTA)
            if stored["lesion_threshold"] != 0.5
            else mask
        )
        assert np.array_equal(postprocessed, apply_steps(expected, kept))
    # `nnunet-mtl postprocess` on a copy of the folder determines the same again
    copy = Path(shutil.copytree(folder, tmp_path / folder.name))
    (copy / POSTPROCESSING_FILE).unlink()
    gt = nnunet_root / "nnUNet_preprocessed" / planned_dataset[0] / "gt_segmentations"
    assert determine_for_model(copy, gt_folder=gt)[0] == read_postprocessing(folder)
    assert main(["postprocess", "--model-dir", str(tmp_path / "nowhere")]) == 2
    assert "model folder not found" in capsys.readouterr().err


def test_checkpoint_holds_multitask_state_and_loads_weights_only(smoke_model):
    folder, _ = smoke_model
    checkpoint = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=True)
    state = checkpoint["multitask"]
    assert len(state["class_weights"]) == 3
    assert state["best_epoch"] in (0, 1, 2) and state["best_metric"] is not None
    assert checkpoint["current_epoch"] == SMOKE.schedule.num_epochs
    assert any(k.startswith("head.") for k in checkpoint["network_weights"])
    logging = checkpoint["logging"]
    # the LDA readout fitted on the training split: before checkpoint_final is saved, and on checkpoint_best's
    # weights for the final validation, written back to it (predict reads it; the test below compares)
    for name in ("checkpoint_final.pth", "checkpoint_best.pth"):
        weights = torch.load(folder / "fold_0" / name, weights_only=True)["network_weights"]
        assert bool(weights["head.readout_fitted"]) and weights["head.readout_weight"].abs().sum() > 0, name
    # other tests instantiate trainers on this fold too, each writing its own log: take the training run's
    logs = [path.read_text() for path in (folder / "fold_0").glob("training_log_*.txt")]
    (log,) = [text for text in logs if "Training done." in text]
    # once for checkpoint_final, then once per inference candidate the final validation scored
    fits = log.count("fitted on the head's features of 6 training cases")
    assert fits == 1 + len(read_inference_choice(folder, [0]).determined_on["candidates"])
    assert len(logging["wv_combined"]) == 3 and len(logging["train_cls_losses"]) == 3
    assert logging["phase"] == [1, 2, 2]


def test_tensorboard_events_hold_both_tasks_curves_as_logged(smoke_model):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, _ = smoke_model
    fold = folder / "fold_0"
    logging = torch.load(fold / "checkpoint_final.pth", weights_only=True)["logging"]
    events = EventAccumulator(str(fold / "tensorboard"))
    events.Reload()
    for key, tag in (
        ("train_seg_losses", "loss/train_segmentation"),
        ("train_cls_losses", "loss/train_classification"),
        ("wv_dice_whole", "whole_volume_validation/dice_whole_pancreas"),
        ("wv_dice_lesion", "whole_volume_validation/dice_lesion"),
        ("wv_macro_f1", "whole_volume_validation/subtype_macro_f1"),
        ("lrs", "learning_rate"),
        ("phase", "phase"),
    ):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == list(range(len(logging[key]))), tag
        assert np.allclose([s.value for s in scalars], logging[key], rtol=1e-6), tag


def test_resume_restores_phase_weights_best_and_early_stopping(smoke_model, planned_dataset, nnunet_root):
    folder, _ = smoke_model
    checkpoint = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=True)
    trainer = make_trainer(nnunet_root, planned_dataset, continue_training=True)
    trainer.load_checkpoint(str(folder / "fold_0" / "checkpoint_final.pth"))
    state = checkpoint["multitask"]
    assert trainer.class_weights.tolist() == pytest.approx(state["class_weights"])
    assert (trainer.selection.best_metric, trainer.selection.best_epoch) == (state["best_metric"], state["best_epoch"])
    assert trainer.current_epoch == 3 and trainer.phase() == 2
    assert trainer.epochs_without_improvement() == 3 - state["best_epoch"]
    assert trainer.logger.get_value("wv_combined", None) == checkpoint["logging"]["wv_combined"]
    for key, value in trainer.multitask_network.state_dict().items():
        assert torch.equal(value, checkpoint["network_weights"][key])


@pytest.mark.slow
def test_early_stopping_really_ends_training(planned_dataset, nnunet_root, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    trainer = make_trainer(nnunet_root, planned_dataset, nnUNetTrainerMultitaskStopEarly)
    trainer.run_training()
    assert trainer.current_epoch == 2  # epochs 0 and 1 of 10: patience 2 after the best at epoch 0
    checkpoint = torch.load(f"{trainer.output_folder}/checkpoint_final.pth", weights_only=True)
    assert checkpoint["current_epoch"] == 2
    log = Path(trainer.log_file).read_text()
    assert "early stopping" in log


@pytest.mark.slow
def test_time_budget_sizes_the_schedule_and_validates_the_last_epoch(planned_dataset, nnunet_root, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    trainer = make_trainer(nnunet_root, planned_dataset, nnUNetTrainerMultitaskBudget)
    trainer.run_training()
    log = trainer.logger.local_logger.my_fantastic_logging
    elapsed = log["epoch_end_timestamps"][-1] - log["epoch_start_timestamps"][0]  # validations included
    per_epoch = elapsed / trainer.num_epochs
    budget = BUDGET.schedule.time_budget_minutes * 60
    assert 2 <= trainer.current_epoch == trainer.num_epochs < BUDGET.schedule.num_epochs
    assert budget - 2 * per_epoch <= elapsed <= budget + 2 * per_epoch
    assert trainer.lr_scheduler.max_steps == trainer.selection.num_epochs == trainer.num_epochs
    assert not np.isnan(log["wv_combined"][-1])  # the last epoch was validated
    assert log["lrs"][-1] < log["lrs"][0] / 2  # the poly decay ran over the epochs that fitted


def test_time_budget_leaves_out_the_downtime_before_continue(planned_dataset, nnunet_root):
    trainer = make_trainer(nnunet_root, planned_dataset, nnUNetTrainerMultitaskScratch)
    now = time.time()
    # epochs 0-4 took 10 s each and ended an hour ago; --continue began epoch 5 ten seconds ago
    starts = [now - 3600 - 50 + 10 * i for i in range(5)] + [now - 10]
    for epoch, start in enumerate(starts):
        trainer.logger.log("epoch_start_timestamps", start, epoch)
        if epoch < 5:
            trainer.logger.log("epoch_end_timestamps", start + 10, epoch)
    trainer.current_epoch = trainer._resumed_at_epoch = 5
    assert trainer.training_seconds() == pytest.approx(60, abs=1)
    trainer._resumed_at_epoch = 0  # the same log read as one uninterrupted run
    assert trainer.training_seconds() == pytest.approx(3650, abs=1)


@pytest.fixture
def trainer_with_batch(planned_dataset, nnunet_root, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    trainer = make_trainer(nnunet_root, planned_dataset, nnUNetTrainerMultitaskScratch)  # not the smoke model's
    trainer.on_train_start()
    batch = next(trainer.dataloader_train)
    yield trainer, batch
    trainer.on_train_end()


def test_unknown_case_key_fails_loudly(trainer_with_batch):
    trainer, batch = trainer_with_batch
    batch = {**batch, "keys": ["quiz_9_999", *batch["keys"][1:]]}
    with pytest.raises(UnknownCaseError, match=r"quiz_9_999.*subtypes.json"):
        trainer.train_step(batch)


def test_class_weights_come_from_training_split_counts(trainer_with_batch, small_phantom):
    trainer, _ = trainer_with_batch
    counts = np.bincount([c.subtype for c in scan_assignment_data(small_phantom).train], minlength=3).tolist()
    expected = inverse_frequency_weights(counts, SMOKE.loss.class_weight_smoothing)
    assert torch.allclose(trainer.class_weights, expected)


def test_phase_controls_encoder_gradient_from_classification(trainer_with_batch):
    trainer, batch = trainer_with_batch
    trainer.loss = lambda output, target: output[0].sum() * 0  # isolate the classification loss
    encoder = list(trainer.multitask_network.unet.encoder.parameters())
    for epoch, phase, weight, reaches_encoder in ((0, 1, 0.01, False), (1, 2, 0.1, True)):
        trainer.current_epoch = epoch
        assert trainer.phase() == phase and trainer.cls_weight() == weight
        trainer.train_step(batch)
        grad = sum(float(p.grad.abs().sum()) for p in encoder if p.grad is not None)
        assert (grad > 0) == reaches_encoder


def test_a_failed_readout_fit_keeps_the_mlp_and_says_why(trainer_with_batch):
    trainer, _ = trainer_with_batch
    head = trainer.multitask_network.head
    assert trainer.fit_subtype_readout() and bool(head.readout_fitted)  # a healthy network: fitted
    first = next(trainer.multitask_network.unet.encoder.parameters())
    kept = first.detach().clone()
    with torch.no_grad():
        first.fill_(float("nan"))  # a diverged network: non-finite features
    try:
        assert not trainer.fit_subtype_readout()
    finally:
        with torch.no_grad():
            first.copy_(kept)
    assert not bool(head.readout_fitted) and not head.readout_weight.abs().sum()
    log = Path(trainer.log_file).read_text()
    assert "subtype readout: the MLP (the fit failed: non-finite head features)" in log


def test_each_inference_candidate_is_scored_with_a_readout_fitted_on_its_own_path(trainer_with_batch):
    from nnunet_mtl.inference.choice import STOCK, UNDETERMINED

    trainer, _ = trainer_with_batch
    config = trainer.mtl_config
    # no candidate keeps up: all four are scored and stock, the first one scored, is chosen
    trainer.mtl_config = replace(config, inference=replace(config.inference, choice_dice_tolerance=-1.0))
    try:
        choice = trainer.choose_inference()
    finally:
        trainer.mtl_config = config
    assert choice == STOCK and len(choice.determined_on["candidates"]) == 4
    installed = {name: value.clone() for name, value in trainer.readout_weights().items()}
    assert bool(installed["head.readout_fitted"])
    weight = installed["head.readout_weight"].numpy()
    # stock's readout (one of those fitted on its path, chosen on the validation cases), not the last candidate's
    stock = trainer.fit_subtype_readouts(STOCK)
    assert [f.features for f in stock] == ["statistics", "all"]
    assert sum(np.allclose(f.weight, weight, atol=1e-5) for f in stock) == 1
    one_pass = trainer.fit_subtype_readouts(UNDETERMINED)  # one unmirrored pass: other features, other readouts
    assert not any(np.allclose(f.weight, weight, atol=1e-5) for f in one_pass)
    log = Path(trainer.log_file).read_text()
    assert f"training cases (predicted masks, {STOCK.name}; accuracy" in log
    assert "; validation accuracy statistics: " in log


@pytest.mark.slow
def test_training_steps_lower_both_losses(trainer_with_batch):
    trainer, batch = trainer_with_batch
    trainer.current_epoch = SMOKE.loss.phase1_epochs  # joint phase
    torch.manual_seed(0)
    first = trainer.train_step(batch)
    for _ in range(12):
        last = trainer.train_step(batch)
    assert last["seg_loss"] < first["seg_loss"]
    assert last["cls_loss"] < first["cls_loss"]


@pytest.mark.slow
def test_export_segmentation_only_model_runs_in_stock_nnunet(smoke_model, small_phantom, tmp_path):
    from nnunet_mtl.cli import main

    folder, _ = smoke_model
    exported = tmp_path / "exported"
    assert main(["export-seg", "--model-dir", str(folder), "--out", str(exported), "--checkpoint", "final"]) == 0
    checkpoint = torch.load(exported / "fold_0" / "checkpoint_final.pth", weights_only=True)
    assert checkpoint["trainer_name"] == "nnUNetTrainer"
    assert not any(k.startswith(("head.", "unet.")) for k in checkpoint["network_weights"])
    out = tmp_path / "pred"
    run_nnunet(
        "nnUNetv2_predict_from_modelfolder",
        "-i",
        str(small_phantom / "test"),
        "-o",
        str(out),
        "-m",
        str(exported),
        "-f",
        "0",
        "-chk",
        "checkpoint_final.pth",
        "-device",
        "cpu",
        "--disable_tta",
        "-npp",
        "1",
        "-nps",
        "1",
    )
    for image in (small_phantom / "test").glob("*_0000.nii.gz"):
        mask = sitk.ReadImage(str(out / image.name.replace("_0000", "")))
        assert mask.GetSize() == sitk.ReadImage(str(image)).GetSize()


def test_head_learns_at_full_rate_whatever_the_loss_weight(trainer_with_batch):
    """The loss weight limits what reaches the encoder; the head's own gradient is the unweighted one."""
    from nnunet_mtl.training.distributed import weighted_cross_entropy

    trainer, batch = trainer_with_batch
    trainer.loss = lambda output, target: output[0].sum() * 0
    trainer.current_epoch = SMOKE.loss.phase1_epochs
    trainer.precision = "fp32"  # bf16 rounds a weighted and an unweighted gradient differently
    network = trainer.multitask_network
    torch.manual_seed(1)
    network.zero_grad(set_to_none=True)
    out = trainer.network(batch["data"], reference_maps=trainer.reference_maps(batch["target"]))
    weighted_cross_entropy(out.class_logits, trainer.subtype_targets(batch["keys"]), trainer.class_weights).backward()
    expected = [p.grad.clone() for p in network.head.parameters()]
    torch.manual_seed(1)
    trainer.optimizer.step = lambda: None  # keep the weights, look at the gradient
    trainer.train_step(batch)
    for parameter, grad in zip(network.head.parameters(), expected):
        assert torch.allclose(parameter.grad, grad, rtol=1e-4, atol=1e-6)


def training_pipeline(trainer, augmentation: str):
    """The trainer's initial patch, mirror axes and training transforms for this augmentation."""
    trainer.mtl_config = replace(SMOKE, schedule=replace(SMOKE.schedule, augmentation=augmentation))
    rotation, dummy_2d, initial_patch, mirror_axes = (
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    )
    pipeline = trainer.get_training_transforms(
        trainer.configuration_manager.patch_size,
        rotation,
        trainer._get_deep_supervision_scales(),
        mirror_axes,
        dummy_2d,
        regions=trainer.label_manager.foreground_regions,
    )
    return initial_patch, mirror_axes, pipeline


def test_augmentation_choice_selects_the_training_pipeline(trainer_with_batch):
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

    trainer, batch = trainer_with_batch
    patch = list(trainer.configuration_manager.patch_size)
    assert list(batch["data"].shape[2:]) == patch
    target = ["RemoveLabelTransform", "ConvertSegmentationToRegionsTransform", "DownsampleSegForDSTransform"]
    intensity = [
        "GaussianNoiseTransform",
        "GaussianBlurTransform",
        "MultiplicativeBrightnessTransform",
        "ContrastTransform",
        "SimulateLowResolutionTransform",
        "GammaTransform",
        "GammaTransform",
    ]
    for augmentation, spatial in (("mirror", False), ("intensity", False), ("nnunet", True)):
        initial_patch, mirror_axes, pipeline = training_pipeline(trainer, augmentation)
        assert mirror_axes == (0, 1, 2) and trainer.inference_allowed_mirroring_axes == (0, 1, 2)
        assert (list(initial_patch) == patch) != spatial  # nnU-Net crops from a larger patch after rotating
        kinds = [type(getattr(t, "transform", t)).__name__ for t in pipeline.transforms]
        assert MirrorTransform.__name__ in kinds
        assert (SpatialTransform.__name__ in kinds) == spatial
        if augmentation == "mirror":
            assert kinds == ["MirrorTransform", *target]
        if augmentation == "intensity":  # nnU-Net's own transforms in its order, none spatial
            assert kinds == [*intensity, "MirrorTransform", *target]
            torch.manual_seed(0)
            image = torch.randn(1, *patch)
            segmentation = torch.zeros(1, *patch, dtype=torch.int16)
            out = pipeline(image=image.clone(), segmentation=segmentation)
            assert out["image"].shape == image.shape  # loaded at the patch size, nothing cropped


class nnUNetTrainerMultitaskNpz(nnUNetTrainerMultitaskSmoke):
    """A model folder of its own (nnU-Net names it after the class)."""


def test_final_validation_writes_nnunets_npz_when_asked(planned_dataset, nnunet_root, small_phantom, monkeypatch):
    """nnU-Net's run_training passes --npz to perform_actual_validation: probabilities in the original
    geometry next to each mask, as nnU-Net's export writes them."""
    import pickle

    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    trainer = make_trainer(nnunet_root, planned_dataset, nnUNetTrainerMultitaskNpz)
    trainer.initialize()
    trainer.perform_actual_validation(True)
    folder = Path(trainer.output_folder) / "validation"
    for case in scan_assignment_data(small_phantom).validation:
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{case.name}.nii.gz")))
        probabilities = np.load(folder / f"{case.name}.npz")["probabilities"]
        assert probabilities.shape == (2, *mask.shape)  # whole pancreas, lesion: the original grid
        expected = np.where(probabilities[1] > 0.5, 2, np.where(probabilities[0] > 0.5, 1, 0))
        assert np.array_equal(mask, expected)
        with open(folder / f"{case.name}.pkl", "rb") as handle:
            assert list(pickle.load(handle)["shape_before_cropping"]) == list(mask.shape)
    assert (folder / "subtype_probabilities.csv").read_text().startswith("Names,p0,p1,p2\n")
    assert not list(folder.glob(".tmp-*"))


def test_most_training_patches_contain_the_lesion(trainer_with_batch):
    """The tiny preset centres every patch on foreground (oversample 1.0); nnU-Net draws the region to centre
    on uniformly among whole pancreas and lesion, so at least half of the patches hold lesion, and with the
    CPU plan's patch holding the median case nearly all do (benchmarks/patch_sampling.py measures it on the
    phantom family)."""
    trainer, _ = trainer_with_batch
    assert trainer.oversample_foreground_percent == 1.0
    patches = [patch for _ in range(20) for patch in next(trainer.dataloader_train)["target"][0]]
    assert sum(int(patch[1].sum() > 0) for patch in patches) / len(patches) >= 0.9


def test_cpu_training_makes_its_batches_in_process_unless_nnunets_variable_says_otherwise(
    planned_dataset, nnunet_root, monkeypatch
):
    """The tiny preset's ``cpu_data_loader_processes`` = 0 gives nnU-Net's single-threaded loaders on a CPU
    (workers only take cores from the network there); an ``nnUNet_n_proc_DA`` set by the user wins, and the
    variable is left as it was."""
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
    from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

    from nnunet_mtl.training.trainer import DATA_LOADER_PROCESSES_VARIABLE

    assert TINY.schedule.cpu_data_loader_processes == 0 == SMOKE.schedule.cpu_data_loader_processes
    monkeypatch.delenv(DATA_LOADER_PROCESSES_VARIABLE, raising=False)
    trainer = make_trainer(nnunet_root, planned_dataset, nnUNetTrainerMultitaskScratch)
    trainer.initialize()
    loaders = trainer.get_dataloaders()
    assert all(isinstance(loader, SingleThreadedAugmenter) for loader in loaders)
    assert DATA_LOADER_PROCESSES_VARIABLE not in os.environ
    assert next(loaders[0])["data"].shape[0] == trainer.batch_size

    monkeypatch.setenv(DATA_LOADER_PROCESSES_VARIABLE, "1")
    train, val = trainer.get_dataloaders()
    try:
        assert isinstance(train, NonDetMultiThreadedAugmenter) and train.num_processes == 1
        assert os.environ[DATA_LOADER_PROCESSES_VARIABLE] == "1"
    finally:
        train._finish()
        val._finish()


def test_cpu_training_step_in_bf16_where_chosen(trainer_with_batch):
    """precision "bf16" (what "auto" picks on CPUs with bf16 units) autocasts the step; fp32 does not."""
    trainer, batch = trainer_with_batch
    small = {  # a corner of the patch: bf16 is emulated (slow) on CPUs without bf16 units
        "data": batch["data"][:, :, :8, :16, :16],
        "target": [
            t[:, :, : 8 // f[0], : 16 // f[1], : 16 // f[2]]
            for t, f in zip(batch["target"], ((1, 1, 1), (1, 2, 2), (2, 4, 4), (4, 8, 8)))
        ],
        "keys": batch["keys"],
    }
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        trainer.precision = precision
        step = trainer._step(small, train=True)
        assert step["output"].segmentation[0].dtype == dtype and torch.isfinite(step["total"])


def test_final_validation_and_predict_give_the_same_masks_and_probabilities(smoke_model, small_phantom, tmp_path):
    """One inference engine: the checkpoint is selected on exactly what ``predict`` deploys."""
    from nnunet_mtl.data.subtype_csv import PROBABILITIES_CSV, read_probabilities_csv
    from nnunet_mtl.inference.model import load_model
    from nnunet_mtl.inference.predictor import MultitaskPredictor

    folder, _ = smoke_model  # trained with --val_best: the final validation ran checkpoint_best
    validation = folder / "fold_0" / "validation"
    cases = scan_assignment_data(small_phantom).validation
    model = load_model(folder, (0,), ("best",))
    choice = model.inference_choice  # the final validation ran with the path and mirroring chosen before it
    predictor = MultitaskPredictor(model, "cpu", choice.mirroring, path=choice.path, postprocess=False)
    out = tmp_path / "pred"
    predictor.predict_folder(cases, out)
    validated = read_probabilities_csv(validation / PROBABILITIES_CSV)
    predicted = read_probabilities_csv(out / PROBABILITIES_CSV)
    assert sorted(validated) == sorted(c.name for c in cases)
    for case in cases:
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case.name}.nii.gz")))
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(validation / f"{case.name}.nii.gz")))
        assert np.array_equal(mask, reference), case.name
        assert predicted[case.name] == pytest.approx(validated[case.name], abs=1e-6), case.name


def test_the_installed_readout_is_fitted_on_the_chosen_paths_features(smoke_model, small_phantom):
    """predict classifies with the readout fitted on the features of its own path and mirroring: a readout fitted
    on one unmirrored pass and applied to mirrored passes misclassified a third of a phantom's test cases."""
    from nnunet_mtl.inference.model import load_model
    from nnunet_mtl.inference.predictor import MultitaskPredictor
    from nnunet_mtl.training.readout import fit_readouts

    folder, _ = smoke_model
    model = load_model(folder, (0,), ("best",))
    choice = model.inference_choice
    predictor = MultitaskPredictor(model, "cpu", choice.mirroring, path=choice.path, postprocess=False)
    cases = scan_assignment_data(small_phantom).train
    features = np.stack([predictor.forward(predictor.preprocess(c).data).head_features.numpy() for c in cases])
    head = model.networks[0].head
    num_statistics = head.num_features - sum(head.stage_channels)
    candidates = fit_readouts(features, [c.subtype for c in cases], 3, ("statistics", "all"), num_statistics)
    assert bool(head.readout_fitted)
    # the one the final validation chose (another test may have run --validation-only on this model since)
    chosen = min(candidates, key=lambda c: np.abs(c.weight - head.readout_weight.numpy()).max())
    assert head.readout_weight.numpy() == pytest.approx(chosen.weight, rel=1e-3, abs=1e-3)
    assert head.readout_bias.numpy() == pytest.approx(chosen.bias, rel=1e-3, abs=1e-3)
    if chosen.features == "statistics":  # the learnt stages' columns are not read
        assert not head.readout_weight[:, :-num_statistics].any() and head.readout_weight[:, -num_statistics:].any()
    if choice.mirroring:  # and not the one-pass fit: the mirrored passes' features differ from one pass's
        one_pass = MultitaskPredictor(model, "cpu", False, path="auto", postprocess=False)
        plain = np.stack([one_pass.forward(one_pass.preprocess(c).data).head_features.numpy() for c in cases])
        assert not np.allclose(plain, features, atol=1e-3)


def test_training_ends_with_an_inference_choice_that_predict_follows(smoke_model, small_phantom, tmp_path):
    """The final validation first chooses predict's path and mirroring against stock's tiles and flips."""
    from nnunet_mtl.inference.choice import INFERENCE_FILE, STOCK, read_inference_choice
    from nnunet_mtl.inference.run import predict

    folder, result = smoke_model
    assert (folder / "fold_0" / INFERENCE_FILE).is_file()
    choice = read_inference_choice(folder, [0])
    info = choice.determined_on
    assert info["reference"] == STOCK.name and info["cases"] == 3 and info["source"] == "fold 0"
    tried = info["candidates"]
    assert tried[0]["name"] == STOCK.name and tried[0]["meets_reference"] is None
    assert tried[0]["forward_passes_per_case"] >= 8  # every mirroring of at least one tile
    # the candidates ran cheapest first until one kept up (or none did: stock's own)
    assert [t["meets_reference"] for t in tried[1:]] in ([True], [False, True], [False, False, True], [False] * 3)
    assert choice.name == (tried[-1]["name"] if tried[-1]["meets_reference"] else STOCK.name)
    assert "inference chosen on 3 validation cases" in (result.stdout + result.stderr)

    def settings(out):
        record = next((out / ".nnunet-mtl").glob("*.json"))
        return json.loads(json.loads(record.read_text())["settings"])

    images = small_phantom / "test"
    predict(images, tmp_path / "chosen", folder, (0,))
    assert (settings(tmp_path / "chosen")["tta"], settings(tmp_path / "chosen")["path"]) == (
        choice.mirroring,
        choice.path,
    )
    predict(images, tmp_path / "forced", folder, (0,), tta=not choice.mirroring, path="sliding")
    assert (settings(tmp_path / "forced")["tta"], settings(tmp_path / "forced")["path"]) == (
        not choice.mirroring,
        "sliding",
    )


def test_validation_only_needs_a_finished_training(planned_dataset, capsys):
    from nnunet_mtl.paths import preset_model_folder

    assert main(["train", "--dataset-id", "60", "--validation-only"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith("checkpoint_best.pth: not found: --validation-only validates a model trained earlier")
    assert "\n" not in error
    fold = preset_model_folder(60, "tiny") / "fold_0"  # a training that has not finished: best, no final
    fold.mkdir(parents=True)
    try:
        (fold / "checkpoint_best.pth").write_bytes(b"")
        assert main(["train", "--dataset-id", "60", "--validation-only"]) == 2
        error = capsys.readouterr().err.strip()
        assert (
            error
            == f"nnunet-mtl: error: {fold / 'checkpoint_final.pth'}: not found: this fold's training has not finished"
        )
    finally:
        shutil.rmtree(fold.parent)


@pytest.mark.slow
def test_validation_only_makes_the_choice_validation_and_postprocessing_again(smoke_model, planned_dataset):
    """nnU-Net's ``--val --val_best``, which ``train --validation-only`` runs, on a copy of a trained model."""
    from nnunet_mtl.inference.choice import INFERENCE_FILE, read_fold_choice

    folder, _ = smoke_model
    _, plans = planned_dataset
    copy = folder.parent / f"nnUNetTrainerMultitaskRevalidate__{plans}__3d_fullres"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(folder, copy)
    fold = copy / "fold_0"
    (fold / INFERENCE_FILE).unlink()
    shutil.rmtree(fold / "validation")
    (copy / POSTPROCESSING_FILE).unlink()
    command = ["nnUNetv2_train", "60", "3d_fullres", "0", "-tr", "nnUNetTrainerMultitaskRevalidate", "-p", plans]
    result = run_nnunet(*command, "-device", "cpu", "--val", "--val_best")
    assert "inference chosen on 3 validation cases" in result.stdout + result.stderr
    choice = read_fold_choice(fold)
    assert choice is not None and choice.determined_on["candidates"][0]["meets_reference"] is None
    assert (fold / "validation" / "metrics.json").is_file() and (copy / POSTPROCESSING_FILE).is_file()
    metrics = json.loads((fold / "validation" / "metrics.json").read_text())
    assert sorted(c["name"] for c in metrics["cases"]) == sorted(
        json.loads((folder / "fold_0" / "validation" / "metrics.json").read_text())["cases"][i]["name"]
        for i in range(3)
    )
