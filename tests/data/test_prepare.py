import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mtl.cli import main
from nnunet_mtl.data.layout import scan_assignment_data
from tests.conftest import tree_snapshot


def _prepare(data_dir, dataset_id, *extra):
    return main(["prepare", str(data_dir), "--dataset-id", str(dataset_id), *extra])


def _dataset(nnunet_root, dataset_id, name="PancreasMTL"):
    return nnunet_root / "nnUNet_raw" / f"Dataset{dataset_id:03d}_{name}"


def test_prepare_writes_region_dataset(small_phantom, nnunet_root):
    assert _prepare(small_phantom, 11) == 0
    folder = _dataset(nnunet_root, 11)
    data = scan_assignment_data(small_phantom)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["labels"] == {"background": 0, "whole_pancreas": [1, 2], "pancreas_lesion": 2}
    assert dataset_json["regions_class_order"] == [1, 2]
    assert dataset_json["numTraining"] == len(data.labelled) == 9
    assert dataset_json["file_ending"] == ".nii.gz"

    for case in data.labelled:
        # images carried over byte for byte
        assert (folder / "imagesTr" / f"{case.name}_0000.nii.gz").read_bytes() == case.image.read_bytes()
        source = sitk.ReadImage(str(case.mask))
        label = sitk.ReadImage(str(folder / "labelsTr" / f"{case.name}.nii.gz"))
        assert label.GetPixelID() == sitk.sitkUInt8
        # the float artefact 1.0000152587890625 is rounded to 1; geometry is kept
        assert np.array_equal(sitk.GetArrayFromImage(label), np.rint(sitk.GetArrayFromImage(source)))
        assert label.GetSpacing() == source.GetSpacing() and label.GetOrigin() == source.GetOrigin()
        assert label.GetDirection() == source.GetDirection()
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == sorted(c.image.name for c in data.test)

    subtypes = json.loads((folder / "subtypes.json").read_text())
    assert subtypes == {c.name: int(c.image.parent.name.removeprefix("subtype")) for c in data.labelled}
    split = json.loads((folder / "splits_final.json").read_text())
    assert split == [{"train": [c.name for c in data.train], "val": [c.name for c in data.validation]}]


def test_prepare_twice_gives_the_same_result(small_phantom, nnunet_root):
    assert _prepare(small_phantom, 12) == 0
    folder = _dataset(nnunet_root, 12)
    first = {p: (folder / p).read_bytes() for p in sorted(tree_snapshot(folder)) if (folder / p).is_file()}
    assert _prepare(small_phantom, 12) == 0
    second = {p: (folder / p).read_bytes() for p in sorted(tree_snapshot(folder)) if (folder / p).is_file()}
    assert first == second
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".")) == []


def test_dataset_id_used_by_another_name_is_refused(small_phantom, nnunet_root, capsys):
    assert _prepare(small_phantom, 13, "--name", "First") == 0
    assert _prepare(small_phantom, 13, "--name", "Second") == 2
    assert "already used" in capsys.readouterr().err


@pytest.mark.slow
def test_nnunet_accepts_dataset_and_fold0_is_the_original_split(small_phantom, nnunet_root):
    """nnU-Net's own integrity check passes and its trainer's fold 0 is exactly the kept split."""
    assert _prepare(small_phantom, 14) == 0
    result = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "nnUNetv2_plan_and_preprocess"),
            "-d",
            "14",
            "-c",
            "3d_fullres",
            "--verify_dataset_integrity",
            "-np",
            "1",
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    preprocessed = nnunet_root / "nnUNet_preprocessed" / "Dataset014_PancreasMTL"
    plans = {**load_json(preprocessed / "nnUNetPlans.json"), "continue_training": False}
    trainer = nnUNetTrainer(
        plans, "3d_fullres", 0, load_json(preprocessed / "dataset.json"), device=torch.device("cpu")
    )
    train_keys, val_keys = trainer.do_split()
    data = scan_assignment_data(small_phantom)
    assert sorted(train_keys) == sorted(c.name for c in data.train)
    assert sorted(val_keys) == sorted(c.name for c in data.validation)


# ----------------------------------------------------------------------------------- bad inputs
# One case per bad input (for prepare and every other command): tests/test_bad_inputs.py.


def _label_3(data):
    mask = sorted((data / "train" / "subtype0").glob("*_0000.nii.gz"))[0]
    mask = mask.with_name(mask.name.replace("_0000.nii.gz", ".nii.gz"))
    image = sitk.ReadImage(str(mask))
    labels = sitk.GetImageFromArray(np.where(sitk.GetArrayFromImage(image) > 1.5, 3, 0).astype(np.uint8))
    labels.CopyInformation(image)
    sitk.WriteImage(labels, str(mask), useCompression=True)


def test_bad_input_keeps_an_earlier_good_dataset(phantom_copy, nnunet_root, capsys):
    assert _prepare(phantom_copy, 21) == 0
    folder = _dataset(nnunet_root, 21)
    before = {p: (folder / p).read_bytes() for p in tree_snapshot(folder) if (folder / p).is_file()}
    _label_3(phantom_copy)
    assert _prepare(phantom_copy, 21) == 2
    after = {p: (folder / p).read_bytes() for p in tree_snapshot(folder) if (folder / p).is_file()}
    assert before == after


def test_console_script_exit_code(phantom_copy, tmp_path):
    _label_3(phantom_copy)
    result = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "nnunet-mtl"),
            "prepare",
            str(phantom_copy),
            "--dataset-id",
            "22",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
