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

The width is then fitted to the machine, as nnU-Net fits the patch to the GPU: the training step of the
planned network is timed on this CPU at each width from ``base_features`` down to ``min_base_features``
(every stage's features scaled alike; the patch and spacing stay the data's), and the widest network whose
timed forward-backward fits ``min_training_steps`` times into the schedule's time budget is kept (the
narrowest where none does). A CPU with bf16 units trained the 16-feature network about 3x faster per step
than one without (fp32 on AVX2: 1.1 s against 0.35 s).
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from dataclasses import asdict

import numpy as np
import torch
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

from nnunet_mtl.config import CpuPlanConfig, MultitaskConfig
from nnunet_mtl.paths import CONFIGURATION
from nnunet_mtl.precision import autocast, resolve_precision

BUDGET_KEY = "nnunet_mtl_cpu_plan"  # the budget a plans file was made with (nnU-Net ignores unknown keys)
WIDTH_KEY = "nnunet_mtl_cpu_width"  # the step times measured for the width choice, and the width chosen
LOWRES = "3d_lowres"
WIDTH_STEP = 4  # base features tried: base_features, base_features - 4, ... min_base_features


def with_width(configuration: dict, base_features: int) -> dict:
    """The configuration with every stage's features scaled to ``base_features`` at the first stage."""
    configuration = copy.deepcopy(configuration)
    arch = configuration["architecture"]["arch_kwargs"]
    scale = base_features / arch["features_per_stage"][0]
    arch["features_per_stage"] = [round(f * scale) for f in arch["features_per_stage"]]
    return configuration


def seconds_per_training_step(configuration: dict, precision: str, repeats: int = 2) -> float:
    """The median time of a forward and backward pass (deep supervision, the plan's batch and patch) of the
    configuration's network on this CPU, after one warm-up step."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = configuration["architecture"]
    network = get_network_from_plans(
        arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 1, 2, deep_supervision=True
    )
    x = torch.randn(configuration["batch_size"], 1, *configuration["patch_size"])
    cpu = torch.device("cpu")

    def step() -> float:
        start = time.perf_counter()
        with autocast(precision, cpu):
            loss = sum(o.float().square().mean() for o in network(x))
        loss.backward()
        return time.perf_counter() - start

    # the threads `nnunet-mtl train` trains with; nnU-Net's planner leaves torch at its DA process count
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        step()
        return statistics.median(step() for _ in range(repeats))
    finally:
        torch.set_num_threads(threads)


def choose_width(configuration: dict, config: MultitaskConfig, timer=seconds_per_training_step) -> tuple[int, dict]:
    """The widest base features whose timed step fits ``min_training_steps`` times into the time budget (the
    narrowest where none does), and the seconds per step timed at each width tried."""
    budget, schedule = config.cpu_plan, config.schedule
    if schedule.time_budget_minutes is None:
        return budget.base_features, {}
    precision = resolve_precision(schedule.precision, torch.device("cpu"))
    seconds = {}
    widths = range(budget.base_features, budget.min_base_features - 1, -WIDTH_STEP)
    for width in widths:
        seconds[width] = timer(with_width(configuration, width), precision)
        if schedule.time_budget_minutes * 60 / seconds[width] >= budget.min_training_steps:
            return width, seconds
    return min(seconds), seconds


class nnUNetPlannerMTLCPU(ExperimentPlanner):
    def __init__(self, dataset_name_or_id: str | int, config: MultitaskConfig, plans_name: str):
        super().__init__(dataset_name_or_id, plans_name=plans_name)
        self.config = config
        budget = self.budget = config.cpu_plan
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
        width, seconds = choose_width(chosen, self.config)
        chosen = with_width(chosen, width)
        plans["configurations"] = {CONFIGURATION: chosen}
        chosen_from = LOWRES if LOWRES in configurations else CONFIGURATION
        plans[BUDGET_KEY] = {**asdict(self.budget), "chosen_from": chosen_from}
        plans[WIDTH_KEY] = {"base_features": width, "seconds_per_step": {str(w): s for w, s in seconds.items()}}
        super().save_plans(plans)


def plan_for_cpu(dataset_id: int, config: MultitaskConfig, plans_name: str) -> None:
    """Write ``<plans_name>.json`` next to the dataset's fingerprint in ``$nnUNet_preprocessed``."""
    nnUNetPlannerMTLCPU(dataset_id, config, plans_name).plan_experiment()


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
        + _width_note(plans.get(WIDTH_KEY))
    )


def _width_note(width: dict | None) -> str:
    if not width or not width["seconds_per_step"]:
        return ""
    timed = ", ".join(f"{w}: {s:.2f} s" for w, s in width["seconds_per_step"].items())
    return f"; width {width['base_features']} by the training step timed on this CPU ({timed})"
