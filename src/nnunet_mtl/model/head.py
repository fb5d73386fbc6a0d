"""Classification head on the encoder bottleneck."""

from __future__ import annotations

import torch
from torch import nn

from nnunet_mtl.config import HeadConfig

NUM_INTENSITY_STATISTICS = 6  # per image channel, see intensity_statistics
_EPS = 1e-3


def _resample(weights: torch.Tensor, shape) -> torch.Tensor:
    return nn.functional.adaptive_avg_pool3d(weights.detach().float(), shape)


def intensity_statistics(image: torch.Tensor, lesion: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """Image statistics inside the (soft) lesion and the rest of the gland, (batch, 6 * channels).

    Mean and standard deviation of the intensity in the lesion and in the gland, their difference of
    means, and the log ratio of lesion to gland volume: what a radiologist reads off a CT to tell lesion
    types apart. ``lesion`` and ``whole`` are probability (or mask) maps on the image grid.
    """
    image = image.float()
    spatial = tuple(range(2, image.ndim))
    gland = (whole.detach().float() - lesion.detach().float()).clamp_min(0)
    features, masses = [], []
    for weights in (lesion.detach().float(), gland):
        mass = weights.sum(spatial) + _EPS
        mean = (image * weights).sum(spatial) / mass
        variance = (((image - mean[(...,) + (None,) * len(spatial)]) ** 2) * weights).sum(spatial) / mass
        features += [mean, torch.sqrt(variance + _EPS)]
        masses.append(mass)
    features += [features[0] - features[2], torch.log(masses[0] + 1) - torch.log(masses[1] + 1)]
    return torch.cat(features, 1)


class ClassificationHead(nn.Module):
    """Global pooling -> LayerNorm -> MLP with dropout -> class logits.

    With ``pooling="foreground"`` or ``"lesion"`` the bottleneck is averaged with weights from the
    predicted probability of that structure (resampled to the bottleneck grid); the weights are detached,
    so the classification loss never pushes the segmentation output around. Where nothing is predicted
    the average falls back to uniform. With ``intensity_statistics`` the MLP also gets
    :func:`intensity_statistics` of the input inside the predicted lesion and gland.
    """

    def __init__(self, in_channels: int, num_classes: int, config: HeadConfig, image_channels: int = 1):
        super().__init__()
        self.pooling = config.pooling
        self.use_intensity_statistics = config.intensity_statistics
        self.norm = nn.LayerNorm(in_channels)
        layers: list[nn.Module] = []
        width = in_channels + (NUM_INTENSITY_STATISTICS * image_channels if config.intensity_statistics else 0)
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(config.dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)

    def pool(
        self,
        bottleneck: torch.Tensor,
        voxel_weights: torch.Tensor | None = None,
        spatial_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted sum of the bottleneck features, (batch, channels), and the sum of the weights,
        (batch, 1); the pooled features are their ratio. Sums over several tiles or flips add up to the
        pooling of the whole case. ``spatial_weights`` (on the input grid, e.g. a sliding-window tile's
        share of each voxel) multiply the structure weights."""
        spatial = tuple(range(2, bottleneck.ndim))
        grid = bottleneck.shape[2:]
        if self.pooling != "avg":
            if voxel_weights is None:
                raise ValueError(f"{self.pooling} pooling needs the predicted probability map")
            weights = _resample(voxel_weights, grid) + _EPS  # uniform where nothing is predicted
        else:
            weights = torch.ones((bottleneck.shape[0], 1, *grid), dtype=torch.float32, device=bottleneck.device)
        if spatial_weights is not None:
            weights = weights * _resample(spatial_weights, grid)
        return (bottleneck * weights).sum(spatial), weights.sum(spatial)

    def classify_pooled(self, pooled: torch.Tensor, statistics: torch.Tensor | None = None) -> torch.Tensor:
        features = self.norm(pooled.float())
        if self.use_intensity_statistics:
            if statistics is None:
                raise ValueError("the head was built with intensity statistics but got none")
            features = torch.cat([features, statistics.float()], 1)
        return self.mlp(features)

    def forward(
        self,
        bottleneck: torch.Tensor,
        voxel_weights: torch.Tensor | None = None,
        statistics: torch.Tensor | None = None,
    ) -> torch.Tensor:
        total, mass = self.pool(bottleneck, voxel_weights)
        return self.classify_pooled(total / mass, statistics)
