import os

import pytest

from nnunet_mtl.errors import InputError
from nnunet_mtl.training.tracking import TensorBoardLogger, enable_wandb
from tests.conftest import train_with_nnunet


def test_tensorboard_logger_skips_nan_and_splits_region_lists(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path)
    logger.log("wv_macro_f1", float("nan"), 0)
    logger.log("wv_macro_f1", 0.5, 1)
    logger.log("dice_per_class_or_region/class_2", 0.25, 1)
    logger.log("epoch_start_timestamps", 123.0, 1)
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(s.step, s.value) for s in events.Scalars("whole_volume_validation/subtype_macro_f1")] == [(1, 0.5)]
    assert [s.value for s in events.Scalars("pseudo_dice_patches/region_2")] == [0.25]
    assert not any("timestamp" in tag for tag in events.Tags()["scalars"])


@pytest.mark.slow
def test_wandb_offline_run_records_both_tasks(planned_dataset, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("nnUNet_wandb_enabled", "nnUNet_wandb_mode", "nnUNet_wandb_project"):
        monkeypatch.setenv(name, "")  # records the current state, so that teardown restores it
        monkeypatch.delenv(name)
    monkeypatch.setenv("WANDB_SILENT", "true")
    enable_wandb()
    assert os.environ.get("nnUNet_wandb_mode") == "offline"  # noqa: SIM112 - nnU-Net's name
    folder, _ = train_with_nnunet(*planned_dataset, "nnUNetTrainerMultitaskOneEpoch")
    runs = list((folder / "fold_0" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    record = runs[0].read_bytes()
    for key in (b"train_cls_losses", b"train_seg_losses", b"wv_dice_lesion", b"wv_macro_f1"):
        assert key in record, key


def test_wandb_without_the_package_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(InputError, match=r"pip install 'nnunet-mtl\[wandb\]'"):
        enable_wandb()
