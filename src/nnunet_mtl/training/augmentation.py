"""Training augmentation choices: nnU-Net's own pipeline, or mirroring only for short schedules.

nnU-Net's pipeline (rotation, scaling, noise, blur, brightness, contrast, low resolution, gamma,
mirroring) pays off over its 250,000 training steps; within the ``tiny`` preset's few hundred steps it
slows learning down (on the phantom the lesion appeared later and ended lower; see README, "Measured").
``"mirror"`` keeps the random flips, so inference may still mirror (stock nnU-Net's 8-flip prediction of
the exported weights stays valid), and drops the rest.

:class:`DivisibilityPaddingTransform` (either pipeline, ``divisibility_padding_probability`` in the config)
shows the network the zero slabs that whole-volume prediction adds when it pads a case to the network's
divisibility: nnU-Net's loader cuts patches from inside the image, so without it those slabs (zeros are the
normalised foreground mean, i.e. pancreas-like tissue) are only ever seen at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


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


class DivisibilityPaddingTransform(BasicTransform):
    """With ``probability``, zero a band at both ends of each axis of the patch, as padding to a multiple of
    ``divisor`` does (``pad_nd_image``: ``k`` voxels in all, ``k // 2`` below and the rest above, ``k`` drawn
    from 0 to divisor - 1 per axis). The image is set to 0 there and the segmentation to background."""

    def __init__(self, divisor: Sequence[int], probability: float):
        super().__init__()
        self.divisor = tuple(int(d) for d in divisor)
        self.probability = probability

    def get_parameters(self, **data_dict) -> dict:
        if torch.rand(1) >= self.probability:
            return {"bands": None}
        totals = [int(torch.randint(d, (1,))) for d in self.divisor]
        return {"bands": [(k // 2, k - k // 2) for k in totals]}

    def _zero_bands(self, tensor: torch.Tensor, bands) -> torch.Tensor:
        if bands is None:
            return tensor
        tensor = tensor.clone()
        for axis, (below, above) in enumerate(bands, start=1):
            tensor.narrow(axis, 0, below).zero_()
            tensor.narrow(axis, tensor.shape[axis] - above, above).zero_()
        return tensor

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        return self._zero_bands(img, params["bands"])

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        return self._zero_bands(segmentation, params["bands"])


def with_divisibility_padding(
    pipeline: ComposeTransforms, divisor: Sequence[int], probability: float
) -> ComposeTransforms:
    """``pipeline`` with a :class:`DivisibilityPaddingTransform` before its target preparation (nnU-Net's
    ``RemoveLabelTransform`` onwards), so the bands become background in every region and deep-supervision
    target."""
    if probability == 0:
        return pipeline
    transforms = list(pipeline.transforms)
    position = next(i for i, t in enumerate(transforms) if isinstance(t, RemoveLabelTransform))
    transforms.insert(position, DivisibilityPaddingTransform(divisor, probability))
    return ComposeTransforms(transforms)
