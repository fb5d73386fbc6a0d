"""The inference engine: what ``predict`` and the trainer's whole-volume validation run for each case.

One home for the choices that make a case's logits, so that checkpoints are selected on the numbers users
deploy: the autocast precision (``precision.py``), the path (whole volume or sliding window, by the memory
budget), mirroring, the averaging over a model's members (folds, checkpoints), and what happens when
the accelerator fails:

* **CUDA out of memory**: a whole-volume pass falls back to the sliding window on the device, and that to
  the sliding window on the CPU, each with a one-line warning; the cached blocks are freed in between.
* **Non-finite half-precision logits** (fp16 overflows at 65504): the case is computed again in fp32
  with a warning. nnU-Net's predictor aborts on inf instead.
* **cuDNN autotuning** (``cudnn.benchmark``, which nnU-Net's training and predictor switch on) runs for the
  sliding window, whose tile shape repeats, and not for a whole-volume pass, whose shape is new for every
  case and would be tuned again for each; the setting is restored after the case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

from nnunet_mtl.config import InferenceConfig
from nnunet_mtl.errors import InputError
from nnunet_mtl.inference.forward import CasePrediction, choose_path, predict_sliding_window, predict_whole_volume
from nnunet_mtl.model.multitask import MultitaskUNet
from nnunet_mtl.precision import autocast, resolve_precision

PathChoice = Literal["auto", "whole", "sliding"]
CPU = torch.device("cpu")
# share of the free CUDA memory a forward pass may plan on (the rest: cuDNN workspaces, fragmentation)
CUDA_FREE_MEMORY_SHARE = 0.8


def fallback_attempts(path: str, device: torch.device) -> list[tuple[str, torch.device]]:
    """The (path, device) pairs tried in order when a forward pass runs out of CUDA memory."""
    attempts = [(path, device)]
    if path == "whole":
        attempts.append(("sliding", device))
    if device.type != "cpu":
        attempts.append(("sliding", CPU))
    return attempts


class InferenceEngine:
    """Both outputs of one preprocessed case, from the networks of one model (their outputs averaged)."""

    def __init__(
        self,
        networks: Sequence[MultitaskUNet],
        configuration_manager,
        device: torch.device | str = "cpu",
        config: InferenceConfig | None = None,
        mirror_axes: Sequence[int] | None = None,
        path: PathChoice = "auto",
        warn: Callable[[str], None] | None = None,
    ):
        self.networks = list(networks)
        self.configuration_manager = configuration_manager
        self.device = torch.device(device)
        self.config = config or InferenceConfig()
        if not 0 < self.config.tile_step_size <= 1:
            raise InputError(None, f"--tile-step-size must be in (0, 1], got {self.config.tile_step_size}")
        if self.config.memory_budget_gb <= 0:
            raise InputError(None, f"--memory-budget-gb must be > 0, got {self.config.memory_budget_gb}")
        self.precision = resolve_precision(self.config.precision, self.device)
        self.mirror_axes = tuple(mirror_axes) if mirror_axes is not None else None
        self.path = path
        self.warn = warn or _warn

    @property
    def first_stage_features(self) -> int:
        return int(self.configuration_manager.network_arch_init_kwargs["features_per_stage"][0])

    def budget_bytes(self) -> float:
        """The memory budget for the fp32 estimate of ``forward.estimated_forward_bytes``; on CUDA never more
        than a share of the free device memory. Half-precision autocast is given no more: instance norms and
        the stitched logits stay in fp32, and the estimate was calibrated in fp32 only."""
        budget = self.config.memory_budget_gb * 2**30
        if self.device.type == "cuda":
            free = torch.cuda.mem_get_info(self.device)[0]
            cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
            budget = min(budget, CUDA_FREE_MEMORY_SHARE * (free + cached))
        return budget

    def choose_path(self, spatial_shape: Sequence[int]) -> str:
        if self.path != "auto":
            return self.path
        manager = self.configuration_manager
        return choose_path(
            spatial_shape,
            manager.pool_op_kernel_sizes,
            self.first_stage_features,
            self.budget_bytes(),
            manager.patch_size,
        )

    def forward(self, data: torch.Tensor) -> CasePrediction:
        """Both outputs for one preprocessed case (channels, *spatial), with the fallbacks above."""
        attempts = fallback_attempts(self.choose_path(data.shape[1:]), self.device)
        for i, (path, device) in enumerate(attempts):
            precision = self.precision if device == self.device else resolve_precision("auto", device)
            try:
                prediction = self._forward_on(data, path, device, precision)
            except torch.OutOfMemoryError:
                if i == len(attempts) - 1:
                    raise
                free_cached_memory(self.device)
                following, on = attempts[i + 1]
                self.warn(
                    f"CUDA out of memory in the {path} forward pass of a {'x'.join(map(str, data.shape[1:]))} case: "
                    f"retrying with the {following} path on {on}"
                )
                continue
            if precision != "fp32" and not _finite(prediction):
                self.warn(f"non-finite logits in {precision}: computing this case again in fp32")
                prediction = self._forward_on(data, path, device, "fp32")
            return prediction
        raise AssertionError("unreachable")

    def _forward_on(self, data: torch.Tensor, path: str, device: torch.device, precision: str) -> CasePrediction:
        moved = device != self.device
        if moved:
            for network in self.networks:
                network.to(device)
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = path == "sliding"
        try:
            with autocast(precision, device):
                predictions = [self._one_network(network, data, path) for network in self.networks]
        finally:
            torch.backends.cudnn.benchmark = benchmark
            if moved:
                for network in self.networks:
                    network.to(self.device)
        if len(predictions) == 1:
            return predictions[0]
        return CasePrediction(
            torch.stack([p.segmentation_logits for p in predictions]).mean(0),
            torch.stack([p.class_logits for p in predictions]).mean(0),
            path,
            sum(p.num_forward_passes for p in predictions),
        )

    def _one_network(self, network: MultitaskUNet, data: torch.Tensor, path: str) -> CasePrediction:
        manager = self.configuration_manager
        if path == "whole":
            return predict_whole_volume(
                network, data, manager.pool_op_kernel_sizes, self.mirror_axes, manager.patch_size
            )
        return predict_sliding_window(network, data, manager.patch_size, self.config.tile_step_size, self.mirror_axes)


def _finite(prediction: CasePrediction) -> bool:
    return bool(torch.isfinite(prediction.segmentation_logits).all() and torch.isfinite(prediction.class_logits).all())


def free_cached_memory(device: torch.device) -> None:
    """Return the CUDA caching allocator's unused blocks (nothing on other devices)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _warn(message: str) -> None:
    import warnings

    warnings.warn(message, RuntimeWarning, stacklevel=3)
