"""Training augmentation choices: nnU-Net's own pipeline, or parts of it for short schedules.

nnU-Net's pipeline (rotation, scaling, noise, blur, brightness, contrast, low resolution, gamma,
mirroring) pays off over its 250,000 training steps; within the ``tiny`` preset's few hundred steps it
slows learning down (on the phantom the lesion appeared later and ended lower; see README, "Measured").
``"mirror"`` keeps the random flips, so inference may still mirror (stock nnU-Net's 8-flip prediction of
the exported weights stays valid), and drops the rest. ``"intensity"`` is nnU-Net's pipeline without its
spatial transform: its intensity transforms (noise, blur, brightness, contrast, low resolution, gamma) at its
probabilities, then the flips, on patches loaded at the plan's size. Meant to show the network lesions of lower
contrast than its training cases hold; on the phantom family it changed neither the lesion Dice nor how many
low-contrast lesions were found (README, "How conspicuous the test lesions are"), so ``tiny`` keeps ``"mirror"``.
"""

from __future__ import annotations

from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_mtl.config import Augmentation


def mirror_only_transforms(
    mirror_axes: tuple[int, ...] | None,
    deep_supervision_scales,
    is_cascaded: bool = False,
    foreground_labels=None,
    regions=None,
    ignore_label: int | None = None,
) -> ComposeTransforms:
    """Random flips, then nnU-Net's own target preparation (the same as its validation pipeline)."""
    target = nnUNetTrainer.get_validation_transforms(
        deep_supervision_scales, is_cascaded, foreground_labels, regions, ignore_label
    )
    flips = [MirrorTransform(allowed_axes=mirror_axes)] if mirror_axes else []
    return ComposeTransforms([*flips, *target.transforms])


def training_transforms(
    augmentation: Augmentation,
    patch_size,
    rotation_for_DA,
    deep_supervision_scales,
    mirror_axes,
    do_dummy_2d_data_aug,
    use_mask_for_norm=None,
    is_cascaded=False,
    foreground_labels=None,
    regions=None,
    ignore_label=None,
) -> ComposeTransforms:
    """The pipeline of ``augmentation`` for nnU-Net's ``get_training_transforms`` arguments."""
    if augmentation == "mirror":
        return mirror_only_transforms(
            mirror_axes, deep_supervision_scales, is_cascaded, foreground_labels, regions, ignore_label
        )
    pipeline = nnUNetTrainer.get_training_transforms(
        patch_size,
        rotation_for_DA,
        deep_supervision_scales,
        mirror_axes,
        do_dummy_2d_data_aug,
        use_mask_for_norm,
        is_cascaded,
        foreground_labels,
        regions,
        ignore_label,
    )
    if augmentation == "intensity":
        spatial = (SpatialTransform, Convert3DTo2DTransform, Convert2DTo3DTransform)
        return ComposeTransforms([t for t in pipeline.transforms if not isinstance(t, spatial)])
    return pipeline


def initial_patch_size(augmentation: Augmentation, nnunet_initial: list[int], patch_size) -> list[int]:
    """nnU-Net crops its patches from a larger one that rotation and scaling need; flips and intensity
    transforms need none."""
    return nnunet_initial if augmentation == "nnunet" else list(patch_size)
