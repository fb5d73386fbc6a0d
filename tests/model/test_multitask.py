import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnunet_mtl.config import HeadConfig
from nnunet_mtl.model.checkpoint import segmentation_weights
from nnunet_mtl.model.head import add_pooled
from nnunet_mtl.model.multitask import (
    MultitaskUNet,
    predicted_structure_maps,
    reference_structure_maps,
)

STAGES = dict(
    input_channels=1,
    n_stages=4,
    features_per_stage=[8, 16, 32, 64],
    conv_op=nn.Conv3d,
    kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
    strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
    num_classes=2,
    conv_bias=True,
    norm_op=nn.InstanceNorm3d,
    norm_op_kwargs={"affine": True},
    nonlin=nn.LeakyReLU,
    nonlin_kwargs={"inplace": True},
)


def plain_unet(deep_supervision=True):
    return PlainConvUNet(**STAGES, n_conv_per_stage=2, n_conv_per_stage_decoder=2, deep_supervision=deep_supervision)


def resenc_unet(deep_supervision=True):
    return ResidualEncoderUNet(
        **STAGES, n_blocks_per_stage=[1, 2, 2, 2], n_conv_per_stage_decoder=1, deep_supervision=deep_supervision
    )


def count_encoder_calls(model: MultitaskUNet):
    calls = []
    model.unet.encoder.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("build", [plain_unet, resenc_unet])
@pytest.mark.parametrize("pooling", ["avg", "foreground"])
@pytest.mark.parametrize("training", [True, False])
def test_one_encoder_call_per_forward(build, pooling, training):
    model = MultitaskUNet(build(), 3, HeadConfig(pooling=pooling))
    model.train(training)
    calls = count_encoder_calls(model)
    out = model(torch.randn(2, 1, 16, 32, 32))
    assert len(calls) == 1
    assert out.class_logits.shape == (2, 3)
    # deep supervision: nnU-Net's list of outputs, full resolution first
    assert isinstance(out.segmentation, list)
    assert out.segmentation[0].shape == (2, 2, 16, 32, 32)
    assert out.segmentation[1].shape == (2, 2, 16, 16, 16)


@pytest.mark.parametrize("pooling", ["avg", "lesion"])
def test_one_encoder_call_per_inference_pass(pooling):
    model = MultitaskUNet(plain_unet(False), 3, HeadConfig(pooling=pooling, stages=(0, 1, -1))).eval()
    calls = count_encoder_calls(model)
    evidence = model.evidence(torch.randn(1, 1, 16, 32, 32))
    assert len(calls) == 1
    assert evidence.segmentation.shape == (1, 2, 16, 32, 32)
    pooled = evidence.pooled  # three slots (lesion, gland, every voxel) of stages 0, 1 and 3: 8 + 16 + 64 channels
    assert pooled.sums.shape == (1, 3, 88) and pooled.masses.shape == (1, 3, 3) and pooled.voxels.shape == (1, 3)


@pytest.mark.parametrize("pooling", ["avg", "lesion"])
def test_pooling_sums_of_parts_add_up_to_the_pooling_of_the_whole(pooling):
    head = MultitaskUNet(plain_unet(False), 3, HeadConfig(pooling=pooling, stages=(0, 1, 2, 3))).head
    torch.manual_seed(0)
    features = [
        torch.randn(1, c, *g) for c, g in zip((8, 16, 32, 64), ((16, 32, 32), (16, 16, 16), (8, 8, 8), (4, 4, 4)))
    ]
    maps = torch.rand(1, 2, 16, 32, 32)
    whole = head.pool(features, maps)
    halves = [
        head.pool([f[..., : f.shape[-1] // 2] for f in features], maps[..., :16]),
        head.pool([f[..., f.shape[-1] // 2 :] for f in features], maps[..., 16:]),
    ]
    for part, total in zip(add_pooled(*halves), whole):
        torch.testing.assert_close(part, total, rtol=1e-4, atol=1e-3)  # float32 sums in another order


def test_deep_supervision_toggle_through_decoder_attribute():
    model = MultitaskUNet(plain_unet(), 3, HeadConfig())
    model.decoder.deep_supervision = False  # what nnU-Net's set_deep_supervision_enabled does
    out = model(torch.randn(1, 1, 16, 32, 32))
    assert torch.is_tensor(out.segmentation) and out.segmentation.shape == (1, 2, 16, 32, 32)


def _encoder_grad_norm(model: MultitaskUNet, detach: bool) -> float:
    model.zero_grad(set_to_none=True)
    out = model(torch.randn(2, 1, 16, 32, 32), detach_head_input=detach)
    nn.functional.cross_entropy(out.class_logits, torch.tensor([0, 2])).backward()
    grads = [p.grad for p in model.unet.encoder.parameters()]
    head_grads = [p.grad for p in model.head.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in head_grads[-2:])  # the head always learns
    return sum(float(g.abs().sum()) for g in grads if g is not None)


@pytest.mark.parametrize("pooling", ["avg", "foreground"])
def test_phase1_detach_isolates_encoder_from_classification_loss(pooling):
    torch.manual_seed(0)
    model = MultitaskUNet(plain_unet(), 3, HeadConfig(pooling=pooling))
    assert _encoder_grad_norm(model, detach=True) == 0.0
    assert _encoder_grad_norm(model, detach=False) > 0.0
    # decoder never gets classification gradient (foreground weights are detached)
    model.zero_grad(set_to_none=True)
    out = model(torch.randn(2, 1, 16, 32, 32))
    nn.functional.cross_entropy(out.class_logits, torch.tensor([0, 2])).backward()
    encoder_ids = {id(p) for p in model.unet.encoder.parameters()}  # nnU-Net's decoder also holds the encoder
    decoder_only = [p for p in model.unet.decoder.parameters() if id(p) not in encoder_ids]
    assert decoder_only and all(p.grad is None or p.grad.abs().sum() == 0 for p in decoder_only)


def test_weighted_pooling_follows_the_probability_map():
    config = HeadConfig(pooling="lesion", stages=(-1,), hidden=(), dropout=0.0, intensity_statistics=False)
    head = MultitaskUNet(plain_unet(False), 3, config).head
    bottleneck = torch.zeros(1, 64, 2, 4, 4)
    bottleneck[..., 0, :2, :2] = 1.0  # the feature lives where the lesion is
    maps = torch.zeros(1, 2, 16, 32, 32)
    maps[:, 0] = 1.0
    maps[:, 1, :8, :16, :16] = 1.0
    pooled = []
    head.norms[0].register_forward_hook(lambda module, args, out: pooled.append(args[0]))
    head([bottleneck], maps, None)
    head([bottleneck], torch.ones_like(maps), None)
    assert pooled[0].mean() > 0.9 and pooled[1].mean() == pytest.approx(4 / 32)


def test_low_probability_everywhere_does_not_outweigh_a_small_lesion():
    """Pooling weights are the probability where it reaches the threshold: a 0.01 spread over a large volume
    (the soft output far from the gland) adds nothing."""
    config = HeadConfig(stages=(-1,), hidden=(), dropout=0.0, intensity_statistics=False)
    head = MultitaskUNet(plain_unet(False), 3, config).head
    bottleneck = torch.zeros(1, 64, 4, 8, 8)
    bottleneck[..., 0, 0, 0] = 1.0
    maps = torch.full((1, 2, 16, 64, 64), 0.01)
    maps[:, :, :4, :8, :8] = 0.9  # one bottleneck cell of gland and lesion
    pooled = head.pool([bottleneck], maps)
    assert pooled.voxels[0, 0] == pytest.approx(0.9 * 4 * 8 * 8)
    assert pooled.sums[0, 0, 0] / pooled.masses[0, 0, 0] == pytest.approx(1.0)


def test_empty_lesion_falls_back_to_the_gland_with_finite_case_dependent_logits():
    torch.manual_seed(0)
    model = MultitaskUNet(plain_unet(False), 3, HeadConfig(dropout=0.0)).eval()
    x = torch.randn(2, 1, 16, 32, 32)
    gland_only = torch.zeros(2, 2, 16, 32, 32)
    gland_only[:, 0, 4:12, 8:24, 8:24] = 1.0  # no lesion predicted in either case
    features = model.head_features(model.unet.encoder(x))
    pooled = model.head.pool(features, gland_only)
    assert model.head.slot(pooled).tolist() == [1, 1]  # the gland slot
    logits = model.head.classify(pooled, model.head.statistics(x, gland_only))
    assert torch.isfinite(logits).all() and not torch.allclose(logits[0], logits[1])
    tiny = gland_only.clone()
    tiny[:, 1, 8, 16, 16] = 1.0  # one voxel of a 2048-voxel gland: below lesion_fallback_share
    assert model.head.slot(model.head.pool(features, tiny)).tolist() == [1, 1]
    lesion = gland_only.clone()
    lesion[:, 1, 6:10, 12:20, 12:20] = 1.0
    assert model.head.slot(model.head.pool(features, lesion)).tolist() == [0, 0]
    nothing = torch.zeros_like(gland_only)  # no gland either: every voxel alike
    assert model.head.slot(model.head.pool(features, nothing)).tolist() == [2, 2]
    assert torch.isfinite(
        model.head.classify(model.head.pool(features, nothing), model.head.statistics(x, nothing))
    ).all()


def test_intensity_statistics_match_direct_computation():
    from nnunet_mtl.model.head import intensity_statistics

    image = torch.randn(1, 1, 8, 8, 8)
    whole = torch.zeros_like(image)
    whole[..., 2:6, 2:6, 2:6] = 1
    lesion = torch.zeros_like(image)
    lesion[..., 3:5, 3:5, 3:5] = 1
    stats = intensity_statistics(image, lesion, whole)[0]
    inside, gland = image[lesion > 0], image[(whole > 0) & (lesion == 0)]
    assert stats[0] == pytest.approx(float(inside.mean()), abs=1e-3)
    assert stats[1] == pytest.approx(float(inside.std(unbiased=False)), abs=1e-2)
    assert stats[2] == pytest.approx(float(gland.mean()), abs=1e-3)
    assert stats[4] == pytest.approx(float(inside.mean() - gland.mean()), abs=1e-3)
    assert stats[5] == pytest.approx(float(torch.log(torch.tensor(9.0)) - torch.log(torch.tensor(57.0))), abs=1e-3)


def test_core_and_rim_statistics_match_scipy_morphology():
    from scipy import ndimage

    from nnunet_mtl.model.head import intensity_statistics

    torch.manual_seed(0)
    image = torch.randn(1, 1, 6, 16, 16) * 20 + 50
    whole = torch.zeros_like(image)
    whole[..., 1:5, 2:14, 2:14] = 1
    lesion = torch.zeros_like(image)
    lesion[..., 2:4, 5:10, 4:11] = 0.8  # probability weights, as the head thresholds them
    lesion[..., 3, 7, 7] = 1.0
    stats = intensity_statistics(image, lesion, whole, context=True)[0]
    assert stats.shape == (11,)
    img, les = image[0, 0].double().numpy(), lesion[0, 0].double().numpy()
    core = ndimage.minimum_filter(les, size=(1, 3, 3), mode="constant", cval=0.0)
    rim = ndimage.maximum_filter(les, size=(1, 5, 5), mode="constant", cval=0.0) * (les == 0)
    assert core.sum() > 0 and rim.sum() > 0

    def mean(w):
        return float((img * w).sum() / w.sum())

    gland_mean = mean(whole[0, 0].double().numpy() - les)
    expected = [
        mean(core),
        mean(core) - gland_mean,
        mean(rim),
        mean(les) - mean(rim),
        mean(core) - mean(rim),
    ]
    assert stats[6:].tolist() == pytest.approx(expected, abs=0.05)
    assert stats[:6].tolist() == pytest.approx(intensity_statistics(image, lesion, whole)[0].tolist())


def test_core_of_a_lesion_thinner_than_the_erosion_is_the_lesion():
    from nnunet_mtl.model.head import intensity_statistics

    image = torch.randn(2, 1, 4, 12, 12)
    whole = torch.ones_like(image)
    lesion = torch.zeros_like(image)
    lesion[0, :, 1:3, 4:8, 5] = 1  # one voxel wide in-plane: erosion leaves nothing
    lesion[1, :, 1:3, 3:9, 3:9] = 1
    stats = intensity_statistics(image, lesion, whole, context=True)
    thin = image[0][lesion[0] > 0]
    assert stats[0, 6] == pytest.approx(float(thin.mean()), abs=1e-3)  # core mean = lesion mean
    thick_core = image[1, :, 1:3, 4:8, 4:8]
    assert stats[1, 6] == pytest.approx(float(thick_core.mean()), abs=1e-3)


def test_heads_of_checkpoints_without_core_and_rim_statistics_keep_their_width():
    from nnunet_mtl.config import MultitaskConfig
    from nnunet_mtl.model.head import ClassificationHead

    current = MultitaskConfig()
    assert MultitaskConfig.from_dict(current.to_dict()) == current  # what a checkpoint stores now
    older = current.to_dict()
    del older["head"]["lesion_context_statistics"]  # written before the statistics existed
    restored = MultitaskConfig.from_dict(older)
    assert not restored.head.lesion_context_statistics
    channels = (4, 8)
    assert ClassificationHead(channels, 3, restored.head).num_features == 12 + 6
    assert ClassificationHead(channels, 3, current.head).num_features == 12 + 11


def test_reference_maps_replace_the_prediction():
    torch.manual_seed(0)
    model = MultitaskUNet(plain_unet(), 3, HeadConfig(dropout=0.0)).eval()
    x = torch.randn(1, 1, 16, 32, 32)
    maps = torch.zeros(1, 2, 16, 32, 32)
    maps[:, :, 4:12, 8:24, 8:24] = 1
    calls = count_encoder_calls(model)
    with_reference = model(x, reference_maps=maps).class_logits
    predicted = model(x).class_logits
    assert len(calls) == 2 and not torch.allclose(with_reference, predicted)


@pytest.mark.parametrize("build", [plain_unet, resenc_unet])
def test_segmentation_weights_load_into_stock_network(build):
    model = MultitaskUNet(build(), 3, HeadConfig())
    stock = build()
    result = stock.load_state_dict(segmentation_weights(model.state_dict()), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    model.eval()
    stock.eval()
    x = torch.randn(1, 1, 16, 32, 32)
    assert torch.equal(stock(x)[0], model(x).segmentation[0])


def test_refuses_network_without_encoder():
    with pytest.raises(TypeError, match="encoder"):
        MultitaskUNet(nn.Conv3d(1, 2, 3), 3, HeadConfig())


def test_structure_maps_of_references_and_predictions_agree_for_regions_and_labels():
    """One conversion for the reference masks (training) and the predicted probabilities (inference)."""
    labels = torch.randint(0, 3, (2, 1, 4, 5, 6))
    whole, lesion = (labels > 0).float(), (labels == 2).float()
    regions = torch.cat([whole, lesion], 1)  # nnU-Net's region target, regions_class_order [1, 2]
    expected = torch.cat([whole, lesion], 1)
    assert torch.equal(reference_structure_maps(regions, True, 2), expected)
    assert torch.equal(reference_structure_maps(labels, False, 3), expected)
    # logits whose probabilities are (almost) the reference give (almost) the same maps
    region_logits = (regions * 2 - 1) * 30
    label_logits = torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1).float() * 30
    assert torch.allclose(predicted_structure_maps(region_logits, True), expected, atol=1e-6)
    assert torch.allclose(predicted_structure_maps(label_logits, False), expected, atol=1e-6)
    soft = torch.randn(2, 3, 4, 5, 6)
    probabilities = torch.softmax(soft, 1)
    assert torch.allclose(
        predicted_structure_maps(soft, False), torch.cat([1 - probabilities[:, :1], probabilities[:, 2:]], 1)
    )


def test_a_fitted_readout_classifies_in_eval_mode_and_the_mlp_trains():
    torch.manual_seed(0)
    model = MultitaskUNet(plain_unet(False), 3, HeadConfig(dropout=0.0))
    head = model.head
    x = torch.randn(2, 1, 16, 32, 32)
    maps = torch.zeros(2, 2, 16, 32, 32)
    maps[:, 0, 4:12, 8:24, 8:24] = 1.0
    maps[:, 1, 6:10, 12:20, 12:20] = 1.0
    pooled = head.pool(model.head_features(model.unet.encoder(x)), maps)
    features = head.case_features(pooled, head.statistics(x, maps))
    assert features.shape == (2, head.num_features)
    mlp = head.mlp(features)
    weight, bias = torch.randn(3, head.num_features), torch.randn(3)
    head.set_readout(weight, bias)
    head.eval()
    torch.testing.assert_close(head.classify(pooled, head.statistics(x, maps)), features @ weight.t() + bias)
    head.train()  # training trains the MLP, fitted readout or not
    torch.testing.assert_close(head.classify(pooled, head.statistics(x, maps)), mlp)
    head.eval()
    with torch.autocast("cpu", torch.bfloat16):  # the engine's autocast: the readout stays in fp32
        logits = head.readout(features)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, features @ weight.t() + bias)
    head.set_readout(None)
    torch.testing.assert_close(head.classify(pooled, head.statistics(x, maps)), mlp)


def test_the_readout_travels_in_the_state_dict_and_older_state_dicts_load_without_one():
    model = MultitaskUNet(plain_unet(False), 3, HeadConfig())
    model.head.set_readout(torch.ones(3, model.head.num_features), torch.arange(3.0))
    state = model.state_dict()
    assert bool(state["head.readout_fitted"]) and torch.equal(state["head.readout_bias"], torch.arange(3.0))
    copy = MultitaskUNet(plain_unet(False), 3, HeadConfig())
    copy.load_state_dict(state)  # strict
    assert bool(copy.head.readout_fitted) and torch.equal(copy.head.readout_weight, model.head.readout_weight)
    older = {k: v for k, v in state.items() if ".readout_" not in k}  # written before the readout existed
    model.load_state_dict(older)  # strict, and the readout is reset to none
    assert not bool(model.head.readout_fitted) and not model.head.readout_weight.any()
