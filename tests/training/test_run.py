import pytest
import torch

from nnunet_mtl.cli import main
from nnunet_mtl.config import PRESETS
from nnunet_mtl.training.planning import TINY_FEATURES, tiny_plans


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


def test_resenc_m_preset_plans_with_nnunet_resenc_planner(planned_dataset, nnunet_root):
    """resenc-m: nnU-Net's ResEnc-M planner; our multitask network wraps its ResidualEncoderUNet."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_mtl.training.planning import ensure_planned
    from nnunet_mtl.training.trainer import nnUNetTrainerMultitask
    from tests.conftest import DATASET_ID

    name, plans_identifier = ensure_planned(DATASET_ID, "resenc-m", num_processes=1, log=lambda *_: None)
    assert plans_identifier == "nnUNetResEncUNetMPlans"
    plans = PlansManager(load_json(nnunet_root / "nnUNet_preprocessed" / name / f"{plans_identifier}.json"))
    config = plans.get_configuration("3d_fullres")
    assert config.network_arch_class_name.endswith("ResidualEncoderUNet")
    network = nnUNetTrainerMultitask.build_network_architecture(plans, config, 1, 2, True).eval()
    calls = []
    network.unet.encoder.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        out = network(torch.randn(1, 1, *config.patch_size))
    assert len(calls) == 1 and out.class_logits.shape == (1, 3)
