import pytest
import torch

from nnunet_mtl.config import HeadConfig
from nnunet_mtl.inference.forward import divisibility, estimated_forward_bytes, predict_case
from nnunet_mtl.model.multitask import MultitaskUNet
from tests.model.test_multitask import STAGES, plain_unet

PATCH = (16, 32, 32)


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return MultitaskUNet(plain_unet(False), 3, HeadConfig()).eval()


def _predict(network, data, budget):
    return predict_case(network, data, PATCH, STAGES["strides"], STAGES["features_per_stage"][0], budget)


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
    result = predict_case(network, data, PATCH, STAGES["strides"], 8, 1e12, mirror_axes=(0, 1, 2))
    assert result.num_forward_passes == 8
