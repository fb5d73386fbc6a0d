from types import SimpleNamespace

import pytest
import torch

from nnunet_mtl.config import HeadConfig, InferenceConfig
from nnunet_mtl.inference.engine import InferenceEngine
from nnunet_mtl.inference.forward import (
    divisibility,
    estimated_forward_bytes,
    predict_sliding_window,
    predict_whole_volume,
)
from nnunet_mtl.model.multitask import MultitaskUNet
from tests.inference.test_engine import MANAGER
from tests.model.test_multitask import STAGES, plain_unet

PATCH = (16, 32, 32)


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return MultitaskUNet(plain_unet(False), 3, HeadConfig()).eval()


def _predict(network, data, budget):
    """The engine's path choice under a memory budget in bytes."""
    config = InferenceConfig(memory_budget_gb=budget / 2**30, precision="fp32")
    return InferenceEngine([network], MANAGER, "cpu", config).forward(data)


def test_divisibility_is_the_product_of_strides_per_axis():
    assert divisibility(STAGES["strides"]) == (4, 8, 8)


@pytest.mark.parametrize("shape", [(13, 37, 29), (16, 32, 32), (5, 9, 70)])
def test_whole_volume_path_pads_and_crops_exactly(network, shape):
    data = torch.randn(1, *shape)
    result = _predict(network, data, budget=1e12)
    assert result.path == "whole" and result.num_forward_passes == 1
    assert result.segmentation_logits.shape == (2, *shape)
    assert result.class_logits.shape == (3,)


def test_volume_over_the_budget_takes_the_sliding_window(network):
    data = torch.randn(1, 20, 40, 45)
    padded = [20, 40, 48]
    budget = estimated_forward_bytes(padded, STAGES["features_per_stage"][0]) - 1
    result = _predict(network, data, budget)
    assert result.path == "sliding" and result.num_forward_passes > 1
    assert result.segmentation_logits.shape == (2, 20, 40, 45)
    assert torch.isfinite(result.class_logits).all()


def test_mirroring_averages_eight_passes(network):
    data = torch.randn(1, 16, 32, 32)
    result = predict_whole_volume(network, data, STAGES["strides"], (0, 1, 2), PATCH)
    assert result.num_forward_passes == 8


class IdentityNetwork(torch.nn.Module):
    """Segmentation = the input (two copies), so padding and cropping can be checked voxel for voxel; the
    pooling evidence of a pass is (sum of the spatial weights times the input, sum of the weights)."""

    has_regions = True

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.seen_shapes = []
        self.evidence_sums = []
        self.classified = []

    def evidence(self, x, spatial_weights=None):
        from nnunet_mtl.model.head import PooledFeatures
        from nnunet_mtl.model.multitask import PoolingEvidence

        self.seen_shapes.append(tuple(x.shape[2:]))
        weights = torch.ones_like(x) if spatial_weights is None else spatial_weights.expand_as(x)
        total, weight = (x * weights).sum((2, 3, 4)), weights.sum((2, 3, 4))
        self.evidence_sums.append((total, weight))
        slots = (1, 3, 1)  # the same sums in the three pooling slots
        pooled = PooledFeatures(total[:, None].expand(*slots), weight[:, None].expand(*slots), weight.expand(1, 3))
        return PoolingEvidence(torch.cat([x, x], 1), pooled)

    def case_features(self, x, segmentation, pooled):
        ratio = pooled.sums[:, 0] / pooled.masses[:, 0]
        self.classified.append((x.shape, segmentation.shape, ratio))
        return ratio

    @property
    def head(self):
        return SimpleNamespace(readout=lambda features: features.repeat(1, 3))


@pytest.mark.parametrize("shape", [(13, 37, 29), (16, 32, 32), (5, 9, 70)])
def test_padding_is_to_the_divisibility_and_cropping_is_exact(shape):
    network = IdentityNetwork()
    data = torch.randn(1, *shape)
    result = _predict(network, data, budget=1e12)
    (seen,) = network.seen_shapes
    # the smallest multiple of the divisibility that holds the volume and the patch
    assert seen == tuple(-(-max(n, p) // d) * d for n, p, d in zip(shape, PATCH, (4, 8, 8)))
    assert torch.equal(result.segmentation_logits[0], data[0])
    assert torch.equal(result.segmentation_logits[1], data[0])


def test_sliding_window_tiles_cover_the_volume_exactly_once_in_the_average():
    network = IdentityNetwork()
    data = torch.randn(1, 20, 40, 45)
    result = predict_sliding_window(network, data, PATCH)
    assert result.path == "sliding" and len(network.seen_shapes) == result.num_forward_passes > 1
    assert set(network.seen_shapes) == {PATCH}
    torch.testing.assert_close(result.segmentation_logits[0], data[0])


@pytest.mark.slow
def test_sliding_window_equals_stock_nnunet_sliding_window(network):
    """Our tiles, Gaussian weights and mirroring reproduce nnU-Net's predictor on the same network."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    data = torch.randn(1, 20, 40, 45)
    stock = nnUNetPredictor(tile_step_size=0.5, use_mirroring=True, device=torch.device("cpu"), allow_tqdm=False)
    stock.network = network.unet
    stock.configuration_manager = type("Config", (), {"patch_size": PATCH})()
    stock.allowed_mirroring_axes = (0, 1, 2)
    stock.list_of_parameters = [network.unet.state_dict()]
    stock.label_manager = type("Labels", (), {"num_segmentation_heads": 2})()
    expected = stock.predict_sliding_window_return_logits(data)
    ours = predict_sliding_window(network, data, PATCH, mirror_axes=(0, 1, 2))
    assert ours.num_forward_passes == 8 * len(stock._internal_get_sliding_window_slicers(data.shape[1:]))
    # Stock nnU-Net accumulates the tiles in float16, which is imprecise only where the Gaussian weights are
    # tiny (the volume's rim); our float32 sums agree with it inside and on the sign (the mask) everywhere.
    inside = (slice(None), slice(3, -3), slice(3, -3), slice(3, -3))
    torch.testing.assert_close(ours.segmentation_logits[inside], expected.float()[inside], rtol=0, atol=5e-3)
    assert ((ours.segmentation_logits > 0) == (expected > 0)).float().mean() > 0.99


def test_sliding_window_classifies_the_case_once_from_all_tiles_pooling_sums():
    network = IdentityNetwork()
    data = torch.randn(1, 20, 40, 45)
    result = predict_sliding_window(network, data, PATCH, mirror_axes=(2,))
    assert result.path == "sliding" and len(network.evidence_sums) == result.num_forward_passes > 2
    ((image_shape, segmentation_shape, pooled),) = network.classified  # the head's MLP runs once per case
    assert image_shape[2:] == segmentation_shape[2:] == (20, 40, 45)  # the whole case, stitched
    expected = sum(t for t, _ in network.evidence_sums) / sum(w for _, w in network.evidence_sums)
    torch.testing.assert_close(pooled, expected)
    torch.testing.assert_close(result.class_logits, expected[0].repeat(3))


def test_whole_volume_classification_equals_the_networks_own_forward(network):
    data = torch.randn(1, 16, 32, 32)
    with torch.no_grad():
        expected = network(data[None]).class_logits[0]
    torch.testing.assert_close(_predict(network, data, budget=1e12).class_logits, expected)
