from types import SimpleNamespace

import pytest
import torch

from nnunet_mtl.config import HeadConfig, InferenceConfig
from nnunet_mtl.inference.engine import InferenceEngine, fallback_attempts
from nnunet_mtl.inference.forward import predict_sliding_window
from nnunet_mtl.model.multitask import MultitaskUNet
from tests.model.test_multitask import STAGES, plain_unet

PATCH = (16, 32, 32)
MANAGER = SimpleNamespace(
    patch_size=PATCH,
    pool_op_kernel_sizes=STAGES["strides"],
    network_arch_init_kwargs={"features_per_stage": STAGES["features_per_stage"]},
)


class FailingNetwork(MultitaskUNet):
    """A real multitask network whose passes fail as told: CUDA out of memory for inputs larger than the
    patch, or inf logits under autocast (as fp16 overflows)."""

    def __init__(self, oom_above_patch=False, oom_always=False, inf_under_autocast=False):
        torch.manual_seed(0)
        super().__init__(plain_unet(False), 3, HeadConfig())
        self.oom_above_patch, self.oom_always = oom_above_patch, oom_always
        self.inf_under_autocast = inf_under_autocast
        self.autocast_seen = []

    def evidence(self, x, spatial_weights=None):
        if self.oom_always or (self.oom_above_patch and tuple(x.shape[2:]) != PATCH):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        autocast_on = torch.is_autocast_enabled("cpu")
        self.autocast_seen.append(autocast_on)
        evidence = super().evidence(x, spatial_weights)
        if self.inf_under_autocast and autocast_on:
            return evidence._replace(segmentation=torch.full_like(evidence.segmentation, float("inf")))
        return evidence


def test_out_of_memory_falls_back_to_the_sliding_window_with_one_warning():
    network = FailingNetwork(oom_above_patch=True).eval()
    warnings = []
    engine = InferenceEngine([network], MANAGER, "cpu", InferenceConfig(precision="fp32"), warn=warnings.append)
    data = torch.randn(1, 20, 40, 45)
    assert engine.choose_path(data.shape[1:]) == "whole"  # the memory estimate lets it through
    result = engine.forward(data)
    assert result.path == "sliding" and result.num_forward_passes > 1
    assert len(warnings) == 1 and "out of memory in the whole forward pass of a 20x40x45 case" in warnings[0]
    expected = predict_sliding_window(network, data, PATCH)
    torch.testing.assert_close(result.segmentation_logits, expected.segmentation_logits)
    torch.testing.assert_close(result.class_logits, expected.class_logits)


def test_out_of_memory_on_the_last_attempt_is_raised():
    warnings = []
    engine = InferenceEngine([FailingNetwork(oom_always=True).eval()], MANAGER, "cpu", warn=warnings.append)
    with pytest.raises(torch.OutOfMemoryError):
        engine.forward(torch.randn(1, 20, 40, 45))
    assert len(warnings) == 1 and "retrying with the sliding path on cpu" in warnings[0]


def test_fallbacks_on_cuda_end_on_the_cpu():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert fallback_attempts("whole", cuda) == [("whole", cuda), ("sliding", cuda), ("sliding", cpu)]
    assert fallback_attempts("sliding", cuda) == [("sliding", cuda), ("sliding", cpu)]
    assert fallback_attempts("whole", cpu) == [("whole", cpu), ("sliding", cpu)]
    assert fallback_attempts("sliding", cpu) == [("sliding", cpu)]


def test_non_finite_half_precision_logits_are_computed_again_in_fp32():
    network = FailingNetwork(inf_under_autocast=True).eval()
    warnings = []
    engine = InferenceEngine([network], MANAGER, "cpu", InferenceConfig(precision="bf16"), warn=warnings.append)
    result = engine.forward(torch.randn(1, 16, 32, 32))
    assert network.autocast_seen == [True, False]
    assert torch.isfinite(result.segmentation_logits).all()
    assert warnings == ["non-finite logits in bf16: computing this case again in fp32"]


def test_finite_logits_are_not_computed_twice():
    network = FailingNetwork().eval()
    engine = InferenceEngine([network], MANAGER, "cpu", InferenceConfig(precision="bf16"), warn=pytest.fail)
    engine.forward(torch.randn(1, 16, 32, 32))
    assert network.autocast_seen == [True]


@pytest.mark.parametrize("before", [True, False])
def test_cudnn_autotuning_only_for_the_sliding_window(monkeypatch, before):
    seen = []
    network = FailingNetwork().eval()
    original = network.evidence
    monkeypatch.setattr(network, "evidence", lambda *a: seen.append(torch.backends.cudnn.benchmark) or original(*a))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", before)
    engine = InferenceEngine([network], MANAGER, "cpu", InferenceConfig(precision="fp32"))
    engine._forward_on(torch.randn(1, 16, 32, 32), "whole", torch.device("cpu"), "fp32")
    engine._forward_on(torch.randn(1, 16, 32, 32), "sliding", torch.device("cpu"), "fp32")
    assert seen == [False, True] and torch.backends.cudnn.benchmark == before


def test_half_precision_gets_no_larger_memory_budget():
    budgets = {
        p: InferenceEngine([], MANAGER, "cpu", InferenceConfig(precision=p, memory_budget_gb=2)).budget_bytes()
        for p in ("fp32", "bf16")
    }
    assert budgets == {"fp32": 2 * 2**30, "bf16": 2 * 2**30}


@pytest.mark.parametrize("bad", [{"tile_step_size": 0}, {"tile_step_size": 1.5}, {"memory_budget_gb": 0}])
def test_bad_settings_are_one_line_errors(bad):
    from nnunet_mtl.errors import InputError

    with pytest.raises(InputError, match="must be"):
        InferenceEngine([], MANAGER, "cpu", InferenceConfig(**bad))
