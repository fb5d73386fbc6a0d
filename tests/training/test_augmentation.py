import itertools

import torch

from nnunet_mtl.training.augmentation import mirror_only_transforms

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
