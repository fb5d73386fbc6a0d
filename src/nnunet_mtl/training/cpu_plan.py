"""The ``tiny`` preset's plan: nnU-Net's planner with a CPU compute budget in place of its GPU memory target.

nnU-Net's ``ExperimentPlanner`` shrinks the patch until its estimate of the network's feature maps
(``compute_conv_feature_map_size``, the unit of its VRAM reference) fits the GPU, and adds a ``3d_lowres``
configuration at a coarser spacing when the patch then covers less than a quarter of the median case.
``nnUNetPlannerMTLCPU`` runs that same planner with a budget a 2-core CPU trains at about a second per step
(``CpuPlanConfig.feature_map_budget``), fewer features, and a coverage threshold of the whole median case:
where the median case is larger than that patch, the spacing is coarsened the way nnU-Net coarsens
``3d_lowres`` (the finer axes first), so that the patch holds the median case as the default plan's patch
does on the real data. The configuration chosen (``3d_lowres`` where nnU-Net made one, else
``3d_fullres``) is written as the ``3d_fullres`` configuration of the ``nnUNetMTLTinyPlans`` plans file,
with data of its own: nnU-Net's convention for a plan with its own target spacing
(``nnUNetv2_plan_experiment -overwrite_target_spacing ... -overwrite_plans_name ...``), so stock
``nnUNetv2_preprocess``, ``nnUNetv2_train`` and the predictors read it as any plan.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

from nnunet_mtl.config import CpuPlanConfig
from nnunet_mtl.paths import CONFIGURATION

BUDGET_KEY = "nnunet_mtl_cpu_plan"  # the budget a plans file was made with (nnU-Net ignores unknown keys)
LOWRES = "3d_lowres"


class nnUNetPlannerMTLCPU(ExperimentPlanner):
    def __init__(self, dataset_name_or_id: str | int, budget: CpuPlanConfig, plans_name: str):
        super().__init__(dataset_name_or_id, plans_name=plans_name)
        self.budget = budget
        self.UNet_base_num_features = budget.base_features
        self.UNet_max_features_3d = budget.max_features
        # reference = UNet_reference_val_3d * (target GB / reference GB): with equal GB the budget is the reference
        self.UNet_reference_val_3d = budget.feature_map_budget
        self.UNet_vram_target_GB = self.UNet_reference_val_corresp_GB
        self.lowres_creation_threshold = budget.median_coverage

    def save_plans(self, plans: dict) -> None:
        configurations = plans["configurations"]
        chosen = dict(configurations.get(LOWRES) or configurations[CONFIGURATION])
        chosen.pop("next_stage", None)
        chosen["data_identifier"] = self.generate_data_identifier(CONFIGURATION)
        chosen["batch_dice"] = False
        plans["configurations"] = {CONFIGURATION: chosen}
        chosen_from = LOWRES if LOWRES in configurations else CONFIGURATION
        plans[BUDGET_KEY] = {**asdict(self.budget), "chosen_from": chosen_from}
        super().save_plans(plans)


def plan_for_cpu(dataset_id: int, budget: CpuPlanConfig, plans_name: str) -> None:
    """Write ``<plans_name>.json`` next to the dataset's fingerprint in ``$nnUNet_preprocessed``."""
    nnUNetPlannerMTLCPU(dataset_id, budget, plans_name).plan_experiment()


def made_with(plans: dict, budget: CpuPlanConfig) -> bool:
    """Whether a plans file was made with this budget (else it is planned and preprocessed again)."""
    recorded = dict(plans.get(BUDGET_KEY) or {})
    recorded.pop("chosen_from", None)
    return recorded == asdict(budget)


def describe(plans: dict) -> str:
    """One line for the log: spacing, patch, stages and features, batch, and how much of the median case
    the patch holds."""
    config = plans["configurations"][CONFIGURATION]
    arch = config["architecture"]["arch_kwargs"]
    coverage = np.prod(config["patch_size"]) / np.prod(config["median_image_size_in_voxels"])
    spacing = "x".join(f"{s:.2f}" for s in config["spacing"])
    median = "x".join(str(round(s)) for s in config["median_image_size_in_voxels"])
    return (
        f"CPU plan: spacing {spacing} mm, patch {'x'.join(map(str, config['patch_size']))} "
        f"({min(coverage, 1):.0%} of the median case {median}), "
        f"{arch['n_stages']} stages of {arch['features_per_stage'][0]}-{arch['features_per_stage'][-1]} features, "
        f"batch {config['batch_size']} (from nnU-Net's {plans.get(BUDGET_KEY, {}).get('chosen_from', '?')} planning)"
    )
