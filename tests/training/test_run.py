import numpy as np
import pytest
import torch

from nnunet_mtl.cli import main
from nnunet_mtl.config import PRESETS


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


def _median_shape(plans: dict) -> list[float]:
    return plans["configurations"]["3d_fullres"]["median_image_size_in_voxels"]


def test_cpu_plan_configures_itself_from_the_fingerprint(planned_dataset, nnunet_root, tmp_path):
    """Small cases: nnU-Net's spacing, a patch holding the median case. Cases larger than the CPU budget's patch:
    a coarser spacing (the in-plane axes first, as nnU-Net's 3d_lowres), again a patch holding the median case.
    The plan is an nnU-Net plans file (stock nnUNetv2_train trains on it: test_trainer.py's smoke model)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_mtl.data.phantom import PhantomSpec, generate_phantom
    from nnunet_mtl.data.prepare import prepare_dataset
    from nnunet_mtl.training.cpu_plan import WIDTH_KEY, made_with, plan_for_cpu
    from tests.conftest import DATASET_ID, quick_fingerprint

    budget = PRESETS["tiny"].config.cpu_plan
    name, plans_identifier = planned_dataset
    small = load_json(nnunet_root / "nnUNet_preprocessed" / name / f"{plans_identifier}.json")
    assert made_with(small, budget)
    large_phantom = generate_phantom(
        tmp_path / "large", PhantomSpec(seed=5, train=(1, 1, 1), validation=(1, 0, 0), test=0, shape=(40, 112, 160))
    )
    prepare_dataset(large_phantom, 62, name="Large")
    with quick_fingerprint():
        extract_fingerprints([62], num_processes=1)
    plan_for_cpu(62, PRESETS["tiny"].config, plans_identifier)
    plan_experiments([62, DATASET_ID], "ExperimentPlanner")  # nnU-Net's own plans, to compare with
    folder = nnunet_root / "nnUNet_preprocessed" / "Dataset062_Large"
    large, nnunet = (load_json(folder / f"{n}.json") for n in (plans_identifier, "nnUNetPlans"))
    for plans in (small, large):
        config = PlansManager(plans).get_configuration("3d_fullres")
        median = _median_shape(plans)  # the patch holds the median case (nnU-Net's criterion: its voxels)
        assert np.prod(config.patch_size) >= np.prod(median) and all(
            p >= 0.85 * m for p, m in zip(config.patch_size, median)
        )
        divisor = torch.tensor(config.pool_op_kernel_sizes).prod(0)
        assert all(p % int(d) == 0 for p, d in zip(config.patch_size, divisor))
        width = plans[WIDTH_KEY]["base_features"]
        assert budget.min_base_features <= width <= budget.base_features
        assert config.network_arch_init_kwargs["features_per_stage"][0] == width
        assert max(config.network_arch_init_kwargs["features_per_stage"]) <= budget.max_features
    small_spacing = PlansManager(small).get_configuration("3d_fullres").spacing
    nnunet_spacing = (
        PlansManager(load_json(folder.parent / name / "nnUNetPlans.json")).get_configuration("3d_fullres").spacing
    )
    assert small_spacing == nnunet_spacing
    large_config, full = (PlansManager(p).get_configuration("3d_fullres") for p in (large, nnunet))
    assert large_config.spacing[1] > 1.5 * full.spacing[1] and large_config.spacing[2] > 1.5 * full.spacing[2]
    assert large_config.spacing[1] / full.spacing[1] >= large_config.spacing[0] / full.spacing[0]  # in-plane first
    assert large_config.data_identifier == f"{plans_identifier}_3d_fullres"  # data of its own
    assert np.prod(_median_shape(nnunet)) > 2 * np.prod(large_config.patch_size)  # at nnU-Net's spacing it could not


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


def _configuration(features=(16, 32, 64, 128)):
    return {"architecture": {"arch_kwargs": {"features_per_stage": list(features)}}, "patch_size": [32, 48, 48]}


def test_with_width_scales_every_stage_and_keeps_the_original():
    from nnunet_mtl.training.cpu_plan import with_width

    original = _configuration()
    assert with_width(original, 8)["architecture"]["arch_kwargs"]["features_per_stage"] == [8, 16, 32, 64]
    assert with_width(original, 12)["architecture"]["arch_kwargs"]["features_per_stage"] == [12, 24, 48, 96]
    assert original == _configuration()


@pytest.mark.parametrize(
    ("seconds", "expected", "timed"),
    [
        ({16: 0.3, 12: 0.2, 8: 0.1}, 16, [16]),  # the full width fits 1500 timed steps in 7.5 min
        ({16: 0.71, 12: 0.53, 8: 0.36}, 8, [16, 12, 8]),  # fp32 on 2 AVX2 cores: 634, 849, 1250 steps
        ({16: 0.71, 12: 0.42, 8: 0.36}, 12, [16, 12]),
        ({16: 9.0, 12: 7.0, 8: 5.0}, 8, [16, 12, 8]),  # none fits: the narrowest
    ],
)
def test_width_is_the_widest_that_trains_enough_steps_in_the_budget(seconds, expected, timed):
    from nnunet_mtl.training.cpu_plan import choose_width

    calls = []

    def timer(configuration, precision):
        width = configuration["architecture"]["arch_kwargs"]["features_per_stage"][0]
        calls.append(width)
        return seconds[width]

    config = PRESETS["tiny"].config
    assert config.schedule.time_budget_minutes == 7.5 and config.cpu_plan.min_training_steps == 1000
    width, measured = choose_width(_configuration(), config, timer)
    assert width == expected and calls == timed and measured == {w: seconds[w] for w in timed}


def test_without_a_time_budget_the_width_is_not_timed():
    from dataclasses import replace

    from nnunet_mtl.training.cpu_plan import choose_width

    config = PRESETS["tiny"].config
    config = replace(config, schedule=replace(config.schedule, time_budget_minutes=None))
    assert choose_width(_configuration(), config, timer=pytest.fail) == (16, {})
