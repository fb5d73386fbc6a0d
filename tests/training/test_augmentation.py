import itertools

import pytest
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image

from nnunet_mtl.config import ScheduleConfig
from nnunet_mtl.training.augmentation import (
    DivisibilityPaddingTransform,
    mirror_only_transforms,
    with_divisibility_padding,
)

REGIONS = [(1, 2), (2,)]
SCALES = [[1.0, 1.0, 1.0], [1.0, 0.5, 0.5]]


def _sample(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 6, 8, 10, generator=generator)
    seg = torch.randint(-1, 3, (1, 6, 8, 10), generator=generator).to(torch.int16)  # -1: nnU-Net's padding
    return {"image": image, "segmentation": seg}


def _regions(seg: torch.Tensor) -> torch.Tensor:
    labels = seg[0].clamp(min=0)
    return torch.stack([torch.isin(labels, torch.tensor(r, dtype=labels.dtype)) for r in REGIONS]).to(torch.int16)


def test_mirror_only_flips_image_and_target_together_and_builds_region_targets():
    sample = _sample(0)
    transform = mirror_only_transforms((0, 1, 2), SCALES, regions=REGIONS)
    seen = set()
    for _ in range(64):
        out = transform(image=sample["image"].clone(), segmentation=sample["segmentation"].clone())
        flips = [
            axes
            for r in range(4)
            for axes in itertools.combinations((1, 2, 3), r)
            if torch.equal(out["image"], torch.flip(sample["image"], axes) if axes else sample["image"])
        ]
        assert len(flips) == 1, "the image is the input flipped along exactly one set of axes"
        axes = flips[0]
        expected = _regions(torch.flip(sample["segmentation"], axes) if axes else sample["segmentation"])
        full, low = out["segmentation"]
        assert torch.equal(full.to(torch.int16), expected)
        assert low.shape == (2, 6, 4, 5)  # deep supervision target at half in-plane resolution
        seen.add(axes)
    assert len(seen) == 8, "every combination of the three flips occurs"


def test_without_mirror_axes_nothing_moves():
    sample = _sample(1)
    out = mirror_only_transforms(None, None, regions=REGIONS)(
        image=sample["image"].clone(), segmentation=sample["segmentation"].clone()
    )
    assert torch.equal(out["image"], sample["image"])
    assert torch.equal(out["segmentation"].to(torch.int16), _regions(sample["segmentation"]))


def _bands(image: torch.Tensor) -> list[tuple[int, int]]:
    """Zero slabs at the two ends of each spatial axis of a (1, *spatial) image that is nonzero inside."""
    bands = []
    for axis in range(1, image.ndim):
        profile = image.abs().sum(dim=[a for a in range(image.ndim) if a != axis]) > 0
        inside = torch.nonzero(profile).flatten()
        bands.append((int(inside[0]), int(profile.numel() - 1 - inside[-1])))
    return bands


def test_divisibility_padding_equals_padding_the_inside_to_the_divisibility():
    divisor = (4, 8, 8)
    image = torch.rand(1, 12, 16, 24) + 1  # sizes are multiples of the divisor, values nonzero
    seg = torch.randint(0, 3, (1, 12, 16, 24), dtype=torch.int16)
    transform = DivisibilityPaddingTransform(divisor, probability=1.0)
    torch.manual_seed(0)
    seen = [set(), set(), set()]
    for _ in range(80):
        out = transform(image=image.clone(), segmentation=seg.clone())
        bands = _bands(out["image"])
        inside = tuple(slice(below, n - above) for (below, above), n in zip(bands, image.shape[1:]))
        # an independent computation: nnU-Net's padder on the part left inside gives back the same patch
        expected = pad_nd_image(image[(slice(None), *inside)], None, "constant", {"value": 0}, False, list(divisor))
        assert torch.equal(out["image"], expected)
        expected_seg = torch.zeros_like(seg)
        expected_seg[(slice(None), *inside)] = seg[(slice(None), *inside)]
        assert torch.equal(out["segmentation"], expected_seg)
        for axis, (below, above) in enumerate(bands):
            seen[axis].add(below + above)
    assert seen == [set(range(4)), set(range(8)), set(range(8))], "every padding amount below the divisor occurs"


def test_divisibility_padding_probability():
    image = torch.rand(1, 8, 8, 8) + 1
    torch.manual_seed(0)
    never = DivisibilityPaddingTransform((4, 8, 8), probability=0.0)
    assert all(torch.equal(never(image=image.clone())["image"], image) for _ in range(20))
    half = DivisibilityPaddingTransform((4, 8, 8), probability=0.5)
    changed = sum(not torch.equal(half(image=image.clone())["image"], image) for _ in range(400))
    # p = 0.5, and 1 draw in 4 * 8 * 8 pads nothing: 400 * 0.5 * 255/256 = 199 expected
    assert 160 < changed < 240


def test_padding_bands_become_background_in_the_region_targets():
    pipeline = with_divisibility_padding(mirror_only_transforms(None, SCALES, regions=REGIONS), (2, 4, 4), 1.0)
    kinds = [type(t).__name__ for t in pipeline.transforms]
    assert kinds.index("DivisibilityPaddingTransform") == kinds.index("RemoveLabelTransform") - 1
    image = torch.rand(1, 6, 8, 12) + 1
    seg = torch.full((1, 6, 8, 12), 2, dtype=torch.int16)  # lesion everywhere
    torch.manual_seed(1)
    for _ in range(20):
        out = pipeline(image=image.clone(), segmentation=seg.clone())
        full = out["segmentation"][0]
        assert torch.equal(full[0] > 0, out["image"][0] != 0) and torch.equal(full[1] > 0, out["image"][0] != 0)
    assert with_divisibility_padding(pipeline, (2, 4, 4), 0.0) is pipeline


@pytest.mark.parametrize("probability", [-0.1, 1.5])
def test_divisibility_padding_probability_is_checked(probability):
    with pytest.raises(ValueError, match=r"divisibility_padding_probability must be in \[0, 1\]"):
        ScheduleConfig(divisibility_padding_probability=probability)
