import pytest
import torch

from nnunet_mtl.cli import main
from nnunet_mtl.config import PRESETS
from nnunet_mtl.training.planning import TINY_FEATURES, tiny_plans


def test_train_unknown_dataset_is_a_clear_error(capsys):
    assert main(["train", "--dataset-id", "977", "--preset", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "nnunet-mtl: error: dataset 977 not found: run `nnunet-mtl prepare` first"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_train_cuda_without_gpu_is_a_clear_error(capsys):
    assert main(["train", "--dataset-id", "60", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_trainer_path_holds_the_trainers(capsys):
    assert main(["trainer-path"]) == 0
    folder = capsys.readouterr().out.strip()
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    for name in {p.trainer for p in PRESETS.values()}:
        cls = recursive_find_python_class(folder, name, None, base_folder=folder)
        from nnunet_mtl.training import trainer

        assert cls is getattr(trainer, name)  # the very same class, not a second copy


def test_tiny_plan_is_a_reduced_nnunet_plan(planned_dataset, nnunet_root):
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    name, plans_identifier = planned_dataset
    folder = nnunet_root / "nnUNet_preprocessed" / name
    default = load_json(folder / "nnUNetPlans.json")
    tiny = load_json(folder / f"{plans_identifier}.json")
    assert tiny == tiny_plans(default)
    config = PlansManager(tiny).get_configuration("3d_fullres")
    arch = config.network_arch_init_kwargs
    assert arch["features_per_stage"] == list(TINY_FEATURES) and arch["n_stages"] == 4
    assert config.data_identifier == PlansManager(default).get_configuration("3d_fullres").data_identifier
    divisor = torch.tensor(arch["strides"]).prod(0)
    assert all(p % int(d) == 0 and p <= 48 for p, d in zip(config.patch_size, divisor))
