"""The checkpoint format's one home: what the trainer writes is what predict, export-seg and report read, always
weights-only (ours directly, nnU-Net's loader in benchmark row (a) by force)."""

import argparse
import ast
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_mtl.errors import InputError
from nnunet_mtl.model.checkpoint import (
    FORCE_WEIGHTS_ONLY,
    FORMAT,
    MultitaskState,
    available_folds,
    check_compatible,
    load_checkpoint,
    load_resume_checkpoint,
    save_checkpoint,
    segmentation_checkpoint,
    to_plain,
    training_checkpoint,
    update_network_weights,
    weights_only_loads,
)
from nnunet_mtl.model.export import export_segmentation_model
from tests.training.test_trainer import make_trainer

LABELS = {"background": 0, "whole_pancreas": [1, 2], "pancreas_lesion": 2}


def _checkpoint(epoch: int = 3, **multitask) -> dict:
    state = MultitaskState(
        config={"num_subtypes": 3},
        class_weights=[0.5, 1.0, 1.5],
        best_metric=0.7,
        best_epoch=1,
        dataset_name="Dataset060_PancreasMTL",
        labels=LABELS,
    )
    state = MultitaskState(**{**vars(state), **multitask})
    return training_checkpoint(
        network_weights={"unet.encoder.w": torch.ones(2), "unet.decoder.b": torch.zeros(1), "head.w": torch.ones(3)},
        optimizer_state={"state": {}, "param_groups": []},
        grad_scaler_state=None,
        logging={"wv_combined": [np.float32(0.5), np.nan], "lrs": (0.01, 0.009)},
        current_epoch=epoch,
        init_args={"configuration": "3d_fullres", "device": torch.device("cpu")},
        trainer_name="nnUNetTrainerMultitask",
        mirror_axes=(0, 1, 2),
        multitask=state,
    )


def test_written_checkpoint_loads_weights_only_with_its_state(tmp_path):
    path = tmp_path / "checkpoint_best.pth"
    save_checkpoint(_checkpoint(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_best.pth"]  # no temporary file left
    loaded = load_checkpoint(path)  # torch.load(weights_only=True): plain values and tensors only
    assert loaded["format"] == FORMAT and loaded["current_epoch"] == 3
    assert loaded["init_args"] == {"configuration": "3d_fullres", "device": "cpu"}
    assert loaded["inference_allowed_mirroring_axes"] == [0, 1, 2]
    assert loaded["logging"]["lrs"] == [0.01, 0.009] and type(loaded["logging"]["wv_combined"][0]) is float
    state = MultitaskState.of(loaded)
    assert (state.best_metric, state.best_epoch, state.class_weights) == (0.7, 1, [0.5, 1.0, 1.5])
    assert "_best_ema" not in loaded  # nnU-Net's EMA selection is not ours: nothing dead is stored


def test_updating_network_weights_keeps_everything_else(tmp_path):
    path = tmp_path / "checkpoint_best.pth"
    save_checkpoint(_checkpoint(epoch=7), path)
    update_network_weights(path, {"head.readout_bias": torch.arange(3.0), "head.w": torch.zeros(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_best.pth"]
    loaded = load_checkpoint(path)
    weights = loaded["network_weights"]
    assert torch.equal(weights["head.readout_bias"], torch.arange(3.0)) and torch.equal(
        weights["head.w"], torch.zeros(3)
    )
    assert torch.equal(weights["unet.encoder.w"], torch.ones(2))
    assert loaded["current_epoch"] == 7 and MultitaskState.of(loaded).best_epoch == 1  # not saved as a new epoch


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"", "cannot be loaded as an nnunet-mtl checkpoint"),
        (b"not a checkpoint", "cannot be loaded as an nnunet-mtl checkpoint"),
        ("truncated", "cannot be loaded as an nnunet-mtl checkpoint"),
        ("stock", "not an nnunet-mtl checkpoint (format None"),
    ],
)
def test_a_bad_checkpoint_is_one_line_naming_the_file(tmp_path, content, phrase):
    path = tmp_path / "checkpoint_final.pth"
    if content == "truncated":
        save_checkpoint(_checkpoint(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif content == "stock":
        torch.save({"network_weights": {}, "trainer_name": "nnUNetTrainer"}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(InputError) as refused:
        load_checkpoint(path)
    assert str(refused.value).startswith(f"{path}: ") and phrase in str(refused.value)
    assert "\n" not in str(refused.value)
    with pytest.raises(InputError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pth")


def test_resume_takes_the_newer_checkpoint_best(tmp_path):
    latest, best = tmp_path / "checkpoint_latest.pth", tmp_path / "checkpoint_best.pth"
    save_checkpoint(_checkpoint(epoch=2), latest)
    save_checkpoint(_checkpoint(epoch=3), best)
    checkpoint, path = load_resume_checkpoint(latest)
    assert path == best and checkpoint["current_epoch"] == 3
    save_checkpoint(_checkpoint(epoch=1), best)
    checkpoint, path = load_resume_checkpoint(latest)
    assert path == latest and checkpoint["current_epoch"] == 2
    assert load_resume_checkpoint(best)[1] == best  # only --c's checkpoint_latest looks for a newer best


def test_segmentation_checkpoint_is_stock_nnunet(tmp_path):
    stock = segmentation_checkpoint(_checkpoint())
    assert sorted(stock["network_weights"]) == ["decoder.b", "encoder.w"]
    assert stock["trainer_name"] == "nnUNetTrainer" and stock["init_args"] == {"configuration": "3d_fullres"}


def test_compatibility_with_the_model_folder(tmp_path):
    plans, dataset_json = {"dataset_name": "Dataset060_PancreasMTL"}, {"labels": LABELS}
    check_compatible(tmp_path, _checkpoint(), plans, dataset_json)
    with pytest.raises(InputError, match="trained on dataset Dataset999_Other"):
        check_compatible(tmp_path, _checkpoint(dataset_name="Dataset999_Other"), plans, dataset_json)
    with pytest.raises(InputError, match="label set differs"):
        check_compatible(tmp_path, _checkpoint(labels={"background": 0, "organ": 1}), plans, dataset_json)


def test_available_folds_are_nnunets(tmp_path, capsys):
    for fold, name in ((0, "checkpoint_best.pth"), (2, "checkpoint_best.pth"), (1, "checkpoint_final.pth")):
        (tmp_path / f"fold_{fold}").mkdir()
        (tmp_path / f"fold_{fold}" / name).write_bytes(b"")
    (tmp_path / "fold_all").mkdir()
    (tmp_path / "fold_all" / "checkpoint_best.pth").write_bytes(b"")
    assert available_folds(tmp_path, "checkpoint_best.pth") == [0, 2]
    assert capsys.readouterr().out == ""  # nnU-Net's detection prints; ours is quiet


def test_to_plain():
    assert to_plain({"a": (np.int64(1), np.array([1.5])), "d": torch.device("cpu")}) == {"a": [1, [1.5]], "d": "cpu"}


SOURCE = Path(__file__).resolve().parents[2] / "src" / "nnunet_mtl"


def with_pickled_code(path: Path) -> None:
    """Add an object that only a full unpickler builds (as a malicious payload would be)."""
    state = torch.load(path, weights_only=True)
    state["extra"] = argparse.Namespace(payload="not a tensor")
    torch.save(state, path)


def test_checkpoints_are_written_and_read_in_one_module_only():
    calls = {
        f"{path.relative_to(SOURCE)}:{node.lineno}"
        for path in SOURCE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("torch.load", "torch.save")
    }
    assert calls and {where.split(":")[0] for where in calls} == {"model/checkpoint.py"}


def test_every_torch_load_in_the_package_is_weights_only():
    calls = []
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                flag = {k.arg: k.value for k in node.keywords}.get("weights_only")
                calls.append((f"{path.name}:{node.lineno}", isinstance(flag, ast.Constant) and flag.value is True))
    assert calls and [where for where, safe in calls if not safe] == []


def test_continue_refuses_a_checkpoint_with_pickled_code(smoke_model, planned_dataset, nnunet_root, tmp_path):
    checkpoint = tmp_path / "checkpoint_latest.pth"
    checkpoint.write_bytes((smoke_model[0] / "fold_0" / "checkpoint_final.pth").read_bytes())
    with_pickled_code(checkpoint)
    trainer = make_trainer(nnunet_root, planned_dataset, continue_training=True)
    with pytest.raises(InputError, match="cannot be loaded as an nnunet-mtl checkpoint") as refused:
        trainer.load_checkpoint(str(checkpoint))
    assert isinstance(refused.value.__cause__, pickle.UnpicklingError)


def test_stock_predictor_loads_the_exported_model_weights_only(smoke_model, tmp_path, monkeypatch):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    monkeypatch.delenv(FORCE_WEIGHTS_ONLY, raising=False)
    exported = export_segmentation_model(smoke_model[0], tmp_path / "stock", (0,), "checkpoint_final.pth")

    def initialize() -> None:
        predictor = nnUNetPredictor(device=torch.device("cpu"), verbose=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(exported), (0,), "checkpoint_final.pth")

    with weights_only_loads():
        initialize()  # the export holds only tensors and plain values
    with_pickled_code(exported / "fold_0" / "checkpoint_final.pth")
    initialize()  # nnU-Net's own loader (weights_only=False) builds whatever the file holds
    with weights_only_loads(), pytest.raises(pickle.UnpicklingError):
        initialize()
    assert FORCE_WEIGHTS_ONLY not in os.environ


def _save_half_then_disk_full(obj, handle, *args, **kwargs):
    import errno
    import io

    buffer = io.BytesIO()
    _TORCH_SAVE(obj, buffer)
    handle.write(buffer.getvalue()[: buffer.tell() // 2])
    raise OSError(errno.ENOSPC, "No space left on device")


_TORCH_SAVE = torch.save


def test_full_disk_in_a_checkpoint_write_leaves_the_old_one(tmp_path, monkeypatch):
    from nnunet_mtl.errors import OutputError

    path = tmp_path / "checkpoint_latest.pth"
    save_checkpoint(_checkpoint(epoch=2), path)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _save_half_then_disk_full)
    with pytest.raises(OutputError) as refused:
        save_checkpoint(_checkpoint(epoch=3), path)
    assert str(refused.value) == f"{path}: cannot be written: no space left on device (free space and run again)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_latest.pth"]  # no partial file
    assert path.read_bytes() == before and load_checkpoint(path)["current_epoch"] == 2
    monkeypatch.undo()  # space freed
    save_checkpoint(_checkpoint(epoch=3), path)
    assert load_checkpoint(path)["current_epoch"] == 3


def test_full_disk_in_the_trainers_checkpoint_write_is_an_output_error(planned_dataset, nnunet_root, monkeypatch):
    """The trainer writes through save_checkpoint (the CLI prints an OutputError as one line, as every InputError)."""
    from nnunet_mtl.errors import OutputError
    from tests.training.ext_trainers.smoke_trainers import nnUNetTrainerMultitaskScratch

    trainer = make_trainer(nnunet_root, planned_dataset, nnUNetTrainerMultitaskScratch)
    trainer.initialize()
    path = Path(trainer.output_folder) / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(path))
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _save_half_then_disk_full)
    with pytest.raises(OutputError, match=r"checkpoint_latest\.pth: cannot be written: no space left on device"):
        trainer.save_checkpoint(str(path))
    assert path.read_bytes() == before and not list(path.parent.glob(".tmp-*"))
