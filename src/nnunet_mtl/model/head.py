"""Classification head on several encoder stages, pooled over the lesion or, where none is found, the gland."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from nnunet_mtl.config import HeadConfig

NUM_INTENSITY_STATISTICS = 6  # per image channel, see intensity_statistics
NUM_CONTEXT_STATISTICS = 5  # per image channel, with context=True
LESION, GLAND, UNIFORM = 0, 1, 2  # the pooling slots of PooledFeatures, in this order
_EPS = 1e-3


class PooledFeatures(NamedTuple):
    """What the head pools from one pass, before its MLP; the passes (tiles, flips) of one case add up.

    For each slot (the lesion, the whole gland, every voxel alike): the weighted sum of every pooled stage's
    features, the sum of the weights on each stage's grid, and the slot's weight on the input grid (its
    voxel count where the structure is predicted with certainty)."""

    sums: torch.Tensor  # (batch, 3, channels of the pooled stages, concatenated)
    masses: torch.Tensor  # (batch, 3, pooled stages)
    voxels: torch.Tensor  # (batch, 3)


def add_pooled(a: PooledFeatures | None, b: PooledFeatures) -> PooledFeatures:
    return b if a is None else PooledFeatures(*(x + y for x, y in zip(a, b)))


def resolve_stages(stages: Sequence[int] | None, num_stages: int) -> tuple[int, ...]:
    """Encoder stage indices (negative counts from the bottleneck; None: every stage), shallow to deep."""
    if stages is None:
        return tuple(range(num_stages))
    resolved = sorted({s % num_stages for s in stages if -num_stages <= s < num_stages})
    if not resolved or len(resolved) != len({s % num_stages for s in stages}):
        raise ValueError(f"head stages {tuple(stages)} do not fit an encoder of {num_stages} stages")
    return tuple(resolved)


def _resample(weights: torch.Tensor, shape) -> torch.Tensor:
    return nn.functional.adaptive_avg_pool3d(weights, shape)


def _weighted_mean(image: torch.Tensor, weights: torch.Tensor, spatial: tuple[int, ...]):
    mass = weights.sum(spatial) + _EPS
    return (image * weights).sum(spatial) / mass, mass


def _in_plane_pool(weights: torch.Tensor, width: int) -> torch.Tensor:
    """Maximum over a width x width window in the last two axes: nnU-Net transposes a case's coarsest axis
    first, so these are its two finest (in-plane, for CT)."""
    return nn.functional.max_pool3d(weights, (1, width, width), stride=1, padding=(0, width // 2, width // 2))


def lesion_context_statistics(
    image: torch.Tensor, lesion: torch.Tensor, lesion_mean: torch.Tensor, gland_mean: torch.Tensor
) -> torch.Tensor:
    """Statistics of a lesion that a boundary error of a voxel barely moves, (batch, 5 * channels).

    The core (the lesion eroded by one voxel in-plane; the lesion itself where nothing is left) and the rim (a
    two-voxel ring around it, in-plane): core mean, core minus gland mean, rim mean, lesion minus rim mean,
    core minus rim mean. A small lesion's mean mixes in whatever its predicted outline adds or drops, while
    its centre and its margin (a cyst's wall, a blurred solid edge) keep their look.
    """
    spatial = tuple(range(2, image.ndim))
    core = -_in_plane_pool(-lesion, 3)
    left = core.sum(spatial, keepdim=True) > _EPS
    core = torch.where(left, core, lesion)
    rim = _in_plane_pool(lesion, 5) * (lesion <= 0)
    core_mean, _ = _weighted_mean(image, core, spatial)
    rim_mean, _ = _weighted_mean(image, rim, spatial)
    parts = [core_mean, core_mean - gland_mean, rim_mean, lesion_mean - rim_mean, core_mean - rim_mean]
    return torch.cat(parts, 1)


def intensity_statistics(
    image: torch.Tensor, lesion: torch.Tensor, whole: torch.Tensor, context: bool = False
) -> torch.Tensor:
    """Image statistics inside the lesion and the rest of the gland, (batch, 6 * channels), and with
    ``context`` :func:`lesion_context_statistics` after them, (batch, 11 * channels).

    Mean and standard deviation of the intensity in the lesion and in the gland, their difference of
    means, and the log ratio of lesion to gland volume: what a radiologist reads off a CT to tell lesion
    types apart. ``lesion`` and ``whole`` are weight maps on the image grid (see ``ClassificationHead.weights``).
    """
    image = image.float()
    spatial = tuple(range(2, image.ndim))
    gland = (whole - lesion).clamp_min(0)
    features, masses = [], []
    for weights in (lesion, gland):
        mean, mass = _weighted_mean(image, weights, spatial)
        variance = (((image - mean[(...,) + (None,) * len(spatial)]) ** 2) * weights).sum(spatial) / mass
        features += [mean, torch.sqrt(variance + _EPS)]
        masses.append(mass)
    features += [features[0] - features[2], torch.log(masses[0] + 1) - torch.log(masses[1] + 1)]
    if context:
        features.append(lesion_context_statistics(image, lesion.float(), features[0], features[2]))
    return torch.cat(features, 1)


class ClassificationHead(nn.Module):
    """Pooling of several encoder stages -> a LayerNorm per stage -> MLP with dropout -> class logits.

    ``pooling="lesion"`` averages each stage's features over the predicted lesion, ``"foreground"`` over the
    whole pancreas, ``"avg"`` over every voxel. The weights are the predicted probabilities where they reach
    ``config.weight_threshold`` and 0 elsewhere (a low probability spread over a large volume would otherwise
    outweigh a small lesion), detached, so the classification loss never pushes the segmentation around.
    Where the lesion found is empty or smaller than ``config.lesion_fallback_share`` of the gland, the head
    pools over the gland, and where no gland is found either, over every voxel. With
    ``intensity_statistics`` the MLP also gets :func:`intensity_statistics` of the input (with
    ``lesion_context_statistics`` those of the lesion's core and rim too).
    """

    def __init__(self, stage_channels: Sequence[int], num_classes: int, config: HeadConfig, image_channels: int = 1):
        super().__init__()
        self.config = config
        self.pooling = config.pooling
        self.stages = resolve_stages(config.stages, len(stage_channels))
        self.use_intensity_statistics = config.intensity_statistics
        self.use_context_statistics = config.intensity_statistics and config.lesion_context_statistics
        self.stage_channels = [int(stage_channels[s]) for s in self.stages]
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in self.stage_channels)
        layers: list[nn.Module] = []
        width = sum(self.stage_channels)
        if self.use_intensity_statistics:
            per_channel = NUM_INTENSITY_STATISTICS + NUM_CONTEXT_STATISTICS * self.use_context_statistics
            width += per_channel * image_channels
        self.num_features = width
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(config.dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)
        # A linear readout fitted after training (training/readout.py) replaces the MLP at inference where
        # it is fitted; buffers, so that checkpoints carry it and no optimiser moves it.
        self.register_buffer("readout_weight", torch.zeros(num_classes, self.num_features))
        self.register_buffer("readout_bias", torch.zeros(num_classes))
        self.register_buffer("readout_fitted", torch.zeros((), dtype=torch.bool))
        self._readout_fitted = False  # the buffer's value as a Python flag: no tensor read in compiled graphs

    @property
    def needs_maps(self) -> bool:
        return self.pooling != "avg" or self.use_intensity_statistics

    def weights(self, maps: torch.Tensor) -> torch.Tensor:
        """Pooling weights of the whole pancreas and the lesion, (batch, 2, *spatial), from their probability
        (or reference) maps: the probability where it reaches the threshold, else 0."""
        maps = maps.detach().float()
        return maps * (maps >= self.config.weight_threshold)

    def pool(
        self,
        features: Sequence[torch.Tensor],
        maps: torch.Tensor | None = None,
        spatial_weights: torch.Tensor | None = None,
    ) -> PooledFeatures:
        """Pool ``features`` (the stages of ``self.stages``) of one pass. ``maps``: (batch, 2, *spatial) whole
        pancreas and lesion on the input grid; ``spatial_weights`` (input grid, e.g. a sliding-window tile's
        share of each voxel) multiply every slot's weights."""
        if maps is None:
            if self.pooling != "avg":
                raise ValueError(f"{self.pooling} pooling needs the predicted probability maps")
            grid = (spatial_weights if spatial_weights is not None else features[0]).shape[2:]
            structures = torch.zeros((features[0].shape[0], 2, *grid), device=features[0].device)  # unused
        else:
            structures = self.weights(maps)
        slots = torch.cat([structures[:, 1:2], structures[:, :1], torch.ones_like(structures[:, :1])], 1)
        if spatial_weights is not None:
            slots = slots * spatial_weights.float()
        sums, masses = [], []
        with torch.autocast(slots.device.type, enabled=False):  # sums over many voxels: float32 only
            for stage in features:
                weights = _resample(slots, stage.shape[2:])
                sums.append(torch.einsum("bc...,bk...->bkc", stage.float(), weights))
                masses.append(weights.flatten(2).sum(2))
        voxels = slots.flatten(2).sum(2)
        return PooledFeatures(torch.cat(sums, 2), torch.stack(masses, 2), voxels)

    def slot(self, pooled: PooledFeatures) -> torch.Tensor:
        """The slot each case is classified from, (batch,): the lesion, else the gland, else every voxel."""
        voxels = pooled.voxels
        if self.pooling == "avg":
            return torch.full_like(voxels[:, 0], UNIFORM, dtype=torch.long)
        slot = torch.where(voxels[:, GLAND] > 0, GLAND, UNIFORM)
        if self.pooling == "lesion":
            share = self.config.lesion_fallback_share
            found = (voxels[:, LESION] > 0) & (voxels[:, LESION] >= share * voxels[:, GLAND])
            slot = torch.where(found, LESION, slot)
        return slot

    def case_features(self, pooled: PooledFeatures, statistics: torch.Tensor | None = None) -> torch.Tensor:
        """What the readout classifies, (batch, num_features): every pooled stage's mean over the case's slot,
        layer-normalised, and the intensity statistics."""
        slot = self.slot(pooled)
        rows = torch.arange(slot.shape[0], device=slot.device)
        sums, masses = pooled.sums[rows, slot], pooled.masses[rows, slot].clamp_min(1e-12)
        parts = torch.split(sums, self.stage_channels, dim=1)
        features = [norm(part / masses[:, k : k + 1]) for k, (norm, part) in enumerate(zip(self.norms, parts))]
        if self.use_intensity_statistics:
            if statistics is None:
                raise ValueError("the head was built with intensity statistics but got none")
            features.append(statistics.float())
        return torch.cat(features, 1)

    def readout(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits of :meth:`case_features`: the fitted linear readout in eval mode where one is fitted,
        else the MLP (always in training, which trains the MLP)."""
        if not self.training and self._readout_fitted:
            # LDA logits are large terms that cancel: half-precision autocast would round them by tenths
            with torch.autocast(features.device.type, enabled=False):
                return features.float() @ self.readout_weight.float().t() + self.readout_bias.float()
        return self.mlp(features)

    def set_readout(self, weight: torch.Tensor | None, bias: torch.Tensor | None = None) -> None:
        """Install a fitted linear readout (classes, num_features) and bias; None removes it (the MLP again)."""
        with torch.no_grad():
            if weight is None:
                self.readout_weight.zero_()
                self.readout_bias.zero_()
            else:
                self.readout_weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
                self.readout_bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
            self.readout_fitted.fill_(weight is not None)
        self._readout_fitted = weight is not None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the fitted readout existed have none: they keep the MLP
        for name in ("readout_weight", "readout_bias", "readout_fitted"):
            state_dict.setdefault(prefix + name, torch.zeros_like(getattr(self, name)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._readout_fitted = bool(self.readout_fitted)

    def classify(self, pooled: PooledFeatures, statistics: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits from the pooled features of whole cases (summed over their passes)."""
        return self.readout(self.case_features(pooled, statistics))

    def statistics(self, image: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor | None:
        if not self.use_intensity_statistics:
            return None
        weights = self.weights(maps)
        return intensity_statistics(image, weights[:, 1:], weights[:, :1], self.use_context_statistics)

    def forward(self, features: Sequence[torch.Tensor], maps: torch.Tensor | None, image: torch.Tensor) -> torch.Tensor:
        return self.classify(self.pool(features, maps), self.statistics(image, maps))
