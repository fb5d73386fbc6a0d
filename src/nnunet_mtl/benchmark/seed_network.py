"""The seed system's forward, kept only as a benchmark reference (row (b), benchmarks/train_step.py)."""

from __future__ import annotations

import torch
from torch import nn

from nnunet_mtl.model.head import PooledFeatures
from nnunet_mtl.model.multitask import MultitaskOutput, MultitaskUNet, PoolingEvidence, full_resolution


class EncoderTwiceUNet(nn.Module):
    """The full U-Net for the segmentation, then the encoder AGAIN for the head. Same weights and outputs
    as ``multitask``, one extra encoder pass."""

    def __init__(self, multitask: MultitaskUNet):
        super().__init__()
        self.multitask = multitask

    @property
    def head(self) -> nn.Module:
        return self.multitask.head

    @property
    def has_regions(self) -> bool:
        return self.multitask.has_regions

    def forward(self, x: torch.Tensor, reference_maps: torch.Tensor | None = None) -> MultitaskOutput:
        segmentation = self.multitask.unet(x)
        features = self.multitask.head_features(self.multitask.unet.encoder(x))
        return MultitaskOutput(segmentation, self.multitask.classify(x, features, segmentation, reference_maps))

    def evidence(self, x: torch.Tensor, spatial_weights: torch.Tensor | None = None) -> PoolingEvidence:
        segmentation = full_resolution(self.multitask.unet(x))
        features = self.multitask.head_features(self.multitask.unet.encoder(x))
        return self.multitask.pooling_evidence(features, segmentation, spatial_weights)

    def case_features(self, x: torch.Tensor, segmentation: torch.Tensor, pooled: PooledFeatures) -> torch.Tensor:
        return self.multitask.case_features(x, segmentation, pooled)
