"""Checkpoints are loaded weights-only: ours directly, nnU-Net's loader (benchmark row (a)) by force."""

import argparse
import ast
import os
import pickle
from pathlib import Path

import pytest
import torch

from nnunet_mtl.model.export import export_segmentation_model
from nnunet_mtl.model.safe_loading import FORCE_WEIGHTS_ONLY, weights_only_loads
from tests.training.test_trainer import make_trainer

SOURCE = Path(__file__).resolve().parents[2] / "src" / "nnunet_mtl"


def with_pickled_code(path: Path) -> None:
    """Add an object that only a full unpickler builds (as a malicious payload would be)."""
    state = torch.load(path, weights_only=True)
    state["extra"] = argparse.Namespace(payload="not a tensor")
    torch.save(state, path)


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
    with pytest.raises(pickle.UnpicklingError):
        trainer.load_checkpoint(str(checkpoint))


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
