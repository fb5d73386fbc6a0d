"""Dataset names and model folders come from nnU-Net's own helpers, with one-line errors around them."""

import pytest
from nnunetv2.utilities.file_path_utilities import get_output_folder

from nnunet_mtl.config import PRESETS
from nnunet_mtl.errors import InputError
from nnunet_mtl.paths import dataset_name_for, model_folder, preset_model_folder


def test_dataset_names_and_model_folders(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    (tmp_path / "nnUNet_raw" / "Dataset061_Alpha").mkdir(parents=True)
    assert dataset_name_for(61) == "Dataset061_Alpha"
    tiny = PRESETS["tiny"]
    expected = get_output_folder("Dataset061_Alpha", tiny.trainer, tiny.plans_identifier, "3d_fullres")
    assert str(preset_model_folder(61, "tiny")) == expected
    assert model_folder("Dataset061_Alpha", tiny.trainer, tiny.plans_identifier) == preset_model_folder(61, "tiny")
    (tmp_path / "nnUNet_results" / "Dataset061_Beta").mkdir(parents=True)
    with pytest.raises(InputError, match="dataset id 61 has several names: Dataset061_Alpha, Dataset061_Beta"):
        dataset_name_for(61)
    with pytest.raises(InputError, match=r"no dataset 62 \(Dataset062_\*\): run `nnunet-mtl prepare` first"):
        dataset_name_for(62)
