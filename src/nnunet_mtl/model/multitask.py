"""One encoder pass, two outputs: nnU-Net's segmentation and the case's subtype logits."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from nnunet_mtl.config import HeadConfig, MultitaskConfig
from nnunet_mtl.model.head import ClassificationHead, PooledFeatures

SEGMENTATION_PREFIX = "unet."


class MultitaskOutput(NamedTuple):
    segmentation: torch.Tensor | list[torch.Tensor]  # nnU-Net's form: a list under deep supervision
    class_logits: torch.Tensor  # (batch, num_subtypes)


class PoolingEvidence(NamedTuple):
    """One forward pass, before the head's MLP: what tiles and flips of a case add up."""

    segmentation: torch.Tensor  # (batch, channels, *spatial) full-resolution logits
    pooled: PooledFeatures


def full_resolution(segmentation: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    return segmentation[0] if isinstance(segmentation, (list, tuple)) else segmentation


def structure_maps(per_channel: torch.Tensor, has_regions: bool) -> torch.Tensor:
    """Detached maps of the whole pancreas and of the lesion, (batch, 2, *spatial), from per-channel maps:
    per region (``regions_class_order``, outermost first) or per class (background first, lesion last),
    as probabilities or as a one-hot reference."""
    per_channel = per_channel.detach().float()
    if has_regions:
        return torch.cat([per_channel[:, :1], per_channel[:, -1:]], 1)
    return torch.cat([1 - per_channel[:, :1], per_channel[:, -1:]], 1)


def predicted_structure_maps(logits: torch.Tensor, has_regions: bool) -> torch.Tensor:
    """:func:`structure_maps` of segmentation logits (sigmoid for regions, softmax for labels)."""
    logits = logits.detach().float()
    return structure_maps(torch.sigmoid(logits) if has_regions else torch.softmax(logits, 1), has_regions)


def reference_structure_maps(target: torch.Tensor, has_regions: bool, num_channels: int) -> torch.Tensor:
    """:func:`structure_maps` of nnU-Net's full-resolution training target: region masks
    (batch, regions, *spatial) or a label map (batch, 1, *spatial) of ``num_channels`` classes."""
    if not has_regions:
        target = nn.functional.one_hot(target[:, 0].long(), num_channels).movedim(-1, 1)
    return structure_maps(target, has_regions)


class MultitaskUNet(nn.Module):
    """Wraps any nnU-Net network that has ``encoder`` and ``decoder`` (PlainConvUNet, ResEnc U-Nets).

    ``forward`` runs the encoder once; the decoder takes the skips and the head takes the skips of its
    stages (``HeadConfig.stages``). ``detach_head_input=True`` stops the classification loss from reaching the
    encoder (phase 1 of training). The segmentation network keeps its own parameter names under ``unet.``, so
    ``model.checkpoint.segmentation_weights`` of its state dict loads straight into the stock network class.
    """

    def __init__(
        self, unet: nn.Module, num_classes: int, head: HeadConfig, has_regions: bool = True, image_channels: int = 1
    ):
        super().__init__()
        if not (hasattr(unet, "encoder") and hasattr(unet, "decoder")):
            raise TypeError(f"{type(unet).__name__} has no encoder/decoder; cannot share its encoder")
        self.unet = unet
        self.has_regions = has_regions
        self.head = ClassificationHead(unet.encoder.output_channels, num_classes, head, image_channels)

    # nnU-Net toggles deep supervision through ``network.decoder.deep_supervision``
    @property
    def encoder(self) -> nn.Module:
        return self.unet.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.unet.decoder

    def head_features(self, skips: list[torch.Tensor], detach: bool = False) -> list[torch.Tensor]:
        return [skips[s].detach() if detach else skips[s] for s in self.head.stages]

    def forward(
        self, x: torch.Tensor, detach_head_input: bool = False, reference_maps: torch.Tensor | None = None
    ) -> MultitaskOutput:
        """``reference_maps`` (batch, 2, *spatial: whole pancreas, lesion) replace the predicted maps that
        the head pools over (training on the reference masks)."""
        skips = self.unet.encoder(x)
        segmentation = self.unet.decoder(skips)
        features = self.head_features(skips, detach_head_input)
        return MultitaskOutput(segmentation, self.classify(x, features, segmentation, reference_maps))

    def classify(
        self,
        x: torch.Tensor,
        features: list[torch.Tensor],
        segmentation: torch.Tensor | list[torch.Tensor],
        reference_maps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Subtype logits from the head's stage features, pooled over the (reference or predicted) maps."""
        maps = reference_maps
        if maps is None and self.head.needs_maps:
            maps = predicted_structure_maps(full_resolution(segmentation), self.has_regions)
        return self.head(features, maps, x)

    def evidence(self, x: torch.Tensor, spatial_weights: torch.Tensor | None = None) -> PoolingEvidence:
        """One encoder pass: the segmentation and the head's pooled features (``ClassificationHead.pool``),
        for inference that aggregates tiles or flips into one case-level classification."""
        skips = self.unet.encoder(x)
        segmentation = full_resolution(self.unet.decoder(skips))
        return self.pooling_evidence(self.head_features(skips), segmentation, spatial_weights)

    def pooling_evidence(
        self, features: list[torch.Tensor], segmentation: torch.Tensor, spatial_weights: torch.Tensor | None = None
    ) -> PoolingEvidence:
        maps = predicted_structure_maps(segmentation, self.has_regions) if self.head.pooling != "avg" else None
        return PoolingEvidence(segmentation, self.head.pool(features, maps, spatial_weights))

    def case_features(self, x: torch.Tensor, segmentation: torch.Tensor, pooled: PooledFeatures) -> torch.Tensor:
        """The head's readout input for a case's pooled features (summed over its passes), with the intensity
        statistics of the whole case (image ``x`` and its stitched segmentation logits)."""
        needs = self.head.use_intensity_statistics
        maps = predicted_structure_maps(segmentation, self.has_regions) if needs else None
        return self.head.case_features(pooled, self.head.statistics(x, maps))


def build_multitask_network(
    configuration_manager,
    num_input_channels: int,
    num_output_channels: int,
    config: MultitaskConfig,
    deep_supervision: bool,
    has_regions: bool = True,
) -> MultitaskUNet:
    """nnU-Net's network for a plans configuration, wrapped with the subtype head of ``config``."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    unet = get_network_from_plans(
        configuration_manager.network_arch_class_name,
        configuration_manager.network_arch_init_kwargs,
        configuration_manager.network_arch_init_kwargs_req_import,
        num_input_channels,
        num_output_channels,
        allow_init=True,
        deep_supervision=deep_supervision,
    )
    return MultitaskUNet(unet, config.num_subtypes, config.head, has_regions, num_input_channels)
