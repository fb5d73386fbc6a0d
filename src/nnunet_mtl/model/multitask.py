"""One encoder pass, two outputs: nnU-Net's segmentation and the case's subtype logits."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from nnunet_mtl.config import HeadConfig
from nnunet_mtl.model.head import ClassificationHead, intensity_statistics

SEGMENTATION_PREFIX = "unet."


class MultitaskOutput(NamedTuple):
    segmentation: torch.Tensor | list[torch.Tensor]  # nnU-Net's form: a list under deep supervision
    class_logits: torch.Tensor  # (batch, num_subtypes)


def structure_maps(segmentation: torch.Tensor, has_regions: bool) -> torch.Tensor:
    """Detached probability maps of the whole pancreas and of the lesion, (batch, 2, *spatial).

    Regions (sigmoid outputs, ``regions_class_order`` outermost first): the first and the last region.
    Labels (softmax outputs): one minus background, and the highest label.
    """
    segmentation = segmentation.detach().float()
    if has_regions:
        probabilities = torch.sigmoid(segmentation)
        return torch.cat([probabilities[:, :1], probabilities[:, -1:]], 1)
    probabilities = torch.softmax(segmentation, 1)
    return torch.cat([1 - probabilities[:, :1], probabilities[:, -1:]], 1)


class MultitaskUNet(nn.Module):
    """Wraps any nnU-Net network that has ``encoder`` and ``decoder`` (PlainConvUNet, ResEnc U-Nets).

    ``forward`` runs the encoder once; the decoder takes the skips and the head takes the bottleneck
    (``skips[-1]``). ``detach_head_input=True`` stops the classification loss from reaching the encoder
    (phase 1 of training). The segmentation network keeps its own parameter names under ``unet.``, so
    :meth:`segmentation_state_dict` loads straight into the stock network class.
    """

    def __init__(
        self, unet: nn.Module, num_classes: int, head: HeadConfig, has_regions: bool = True, image_channels: int = 1
    ):
        super().__init__()
        if not (hasattr(unet, "encoder") and hasattr(unet, "decoder")):
            raise TypeError(f"{type(unet).__name__} has no encoder/decoder; cannot share its encoder")
        self.unet = unet
        self.has_regions = has_regions
        bottleneck_channels = unet.encoder.output_channels[-1]
        self.head = ClassificationHead(bottleneck_channels, num_classes, head, image_channels)

    # nnU-Net toggles deep supervision through ``network.decoder.deep_supervision``
    @property
    def encoder(self) -> nn.Module:
        return self.unet.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.unet.decoder

    def forward(
        self, x: torch.Tensor, detach_head_input: bool = False, reference_maps: torch.Tensor | None = None
    ) -> MultitaskOutput:
        """``reference_maps`` (batch, 2, *spatial: whole pancreas, lesion) replace the predicted maps that
        the head pools over (training on the reference masks)."""
        skips = self.unet.encoder(x)
        segmentation = self.unet.decoder(skips)
        bottleneck = skips[-1].detach() if detach_head_input else skips[-1]
        maps = reference_maps
        if maps is None and (self.head.pooling != "avg" or self.head.use_intensity_statistics):
            full_resolution = segmentation[0] if isinstance(segmentation, (list, tuple)) else segmentation
            maps = structure_maps(full_resolution, self.has_regions)
        weights = (
            {"avg": None, "foreground": maps[:, :1], "lesion": maps[:, 1:]}[self.head.pooling]
            if maps is not None
            else None
        )
        statistics = intensity_statistics(x, maps[:, 1:], maps[:, :1]) if self.head.use_intensity_statistics else None
        return MultitaskOutput(segmentation, self.head(bottleneck, weights, statistics))

    def segmentation_state_dict(self) -> dict[str, torch.Tensor]:
        return {
            key[len(SEGMENTATION_PREFIX) :]: value
            for key, value in self.state_dict().items()
            if key.startswith(SEGMENTATION_PREFIX)
        }
