"""A trained multitask model folder, loaded for prediction.

The folder and its checkpoints are read through ``model.checkpoint`` (weights-only loading, the
compatibility check with the folder's plans and dataset.json).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nnunet_mtl.config import MultitaskConfig
from nnunet_mtl.errors import InputError
from nnunet_mtl.inference.choice import UNDETERMINED, InferenceChoice, read_inference_choice
from nnunet_mtl.model.checkpoint import (
    CHECKPOINT_FILES,
    MultitaskState,
    available_folds,
    check_compatible,
    read_checkpoint,
    read_model_json,
)
from nnunet_mtl.model.multitask import MultitaskUNet, build_multitask_network
from nnunet_mtl.postprocessing.plan import Postprocessing, read_postprocessing


@dataclass
class LoadedModel:
    folder: Path
    plans_manager: object  # nnU-Net's PlansManager
    configuration_manager: object  # nnU-Net's ConfigurationManager
    label_manager: object  # nnU-Net's LabelManager
    dataset_json: dict
    config: MultitaskConfig  # as trained (head form, number of subtypes)
    networks: list[MultitaskUNet]  # one per fold and checkpoint; their outputs are averaged
    members: list[str]  # "fold_0/checkpoint_best.pth", ... in the order of ``networks``
    mirror_axes: tuple[int, ...] | None
    postprocessing: Postprocessing  # determined on the validation split (none where not determined)
    digests: list[str] = field(default_factory=list)  # of the checkpoint bytes loaded, in the order of ``members``
    inference_choice: InferenceChoice = UNDETERMINED  # chosen on the folds' validation splits (the dearest)


def load_model(
    folder: Path,
    folds: Sequence[int] | None = None,
    checkpoints: Sequence[str] = ("best",),
    device: torch.device | str = "cpu",
) -> LoadedModel:
    """Load every (fold, checkpoint) member of a model folder; ``folds=None`` takes all folds present."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "model folder not found")
    plans = read_model_json(folder / "plans.json")
    dataset_json = read_model_json(folder / "dataset.json")
    postprocessing = read_postprocessing(folder)
    files = [CHECKPOINT_FILES.get(c, c) for c in checkpoints]
    if folds is None:
        folds = available_folds(folder, files[0])
        if not folds:
            raise InputError(folder, f"no fold_*/{files[0]} in the model folder")
    inference_choice = read_inference_choice(folder, folds)
    plans_manager = PlansManager(plans)
    checkpoint_paths = [folder / f"fold_{fold}" / name for fold in folds for name in files]
    loaded, digests = zip(*(read_checkpoint(path) for path in checkpoint_paths))
    for path, checkpoint in zip(checkpoint_paths, loaded):
        check_compatible(path, checkpoint, plans, dataset_json)
    configuration = loaded[0]["init_args"]["configuration"]
    if configuration not in plans.get("configurations", {}):
        raise InputError(folder / "plans.json", f"has no configuration {configuration!r} used by the checkpoint")
    configuration_manager = plans_manager.get_configuration(configuration)
    reader = plans.get("image_reader_writer", "SimpleITKIO")
    if reader != "SimpleITKIO":
        raise InputError(folder / "plans.json", f"uses image reader {reader}; nnunet-mtl predicts with SimpleITKIO")
    label_manager = plans_manager.get_label_manager(dataset_json)
    config = MultitaskConfig.from_dict(MultitaskState.of(loaded[0]).config)
    in_channels = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    if in_channels != 1:
        raise InputError(folder / "dataset.json", f"model takes {in_channels} channels; nnunet-mtl reads one (_0000)")
    networks = []
    for path, checkpoint in zip(checkpoint_paths, loaded):
        network = build_multitask_network(
            configuration_manager,
            in_channels,
            label_manager.num_segmentation_heads,
            MultitaskConfig.from_dict(MultitaskState.of(checkpoint).config),
            deep_supervision=False,
            has_regions=label_manager.has_regions,
        )
        try:
            network.load_state_dict(checkpoint["network_weights"])
        except RuntimeError as err:
            first = str(err).strip().splitlines()[1] if len(str(err).splitlines()) > 1 else str(err)
            raise InputError(path, f"weights do not fit the model folder's plans ({first.strip()})") from None
        networks.append(network.to(device).eval())
    mirroring = loaded[0].get("inference_allowed_mirroring_axes")
    return LoadedModel(
        folder,
        plans_manager,
        configuration_manager,
        label_manager,
        dataset_json,
        config,
        networks,
        [str(p.relative_to(folder)) for p in checkpoint_paths],
        tuple(mirroring) if mirroring is not None else None,
        postprocessing,
        list(digests),
        inference_choice,
    )
