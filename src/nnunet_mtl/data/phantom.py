"""A synthetic cropped abdominal CT phantom in the assignment layout.

Each case is a crop around a curved pancreas, in Hounsfield-like units: fat, bowel loops with air,
kidney, vertebra, an enhancing aorta, portal/superior mesenteric vein and splenic vein, and a lobulated
gland whose contrast enhancement varies per case. One lesion lies inside the gland; its look depends on
the subtype but the classes overlap in mean intensity, so no single threshold separates them:

* subtype 0 - hypo-enhancing solid mass: darker than the gland, heterogeneous, irregular, blurred margin;
* subtype 1 - cystic: near water density, homogeneous, smooth, thin enhancing wall, sometimes a septum;
* subtype 2 - hyper-enhancing: iso- to hyper-dense to the gland, sometimes with a dark central scar.

Volumes are anisotropic (z spacing about 3x in-plane) and vary in size per case. Like the real data, most
masks store label 1 as the float 1.0000152587890625. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from nnunet_mtl.data.labels import LESION, NUM_SUBTYPES, PANCREAS
from nnunet_mtl.data.subtype_csv import format_subtype_csv
from nnunet_mtl.errors import InputError
from nnunet_mtl.io import check_staged_output_dir, staged_directory

FLOAT_LABEL_ONE = np.float32(1.0000152587890625)  # 1 + 2**-16, exactly representable in float32
FLOAT_MASK_FRACTION = 0.8
SIZE_JITTER = 0.15
HU_MIN, HU_MAX = -1024, 3071
MIN_SIZE, MAX_SIZE = 16, 512  # voxels per axis of the median case
MAX_LESION_SHARE = 0.5
LESION_SHARE_JITTER = 0.3


@dataclass(frozen=True)
class PhantomSpec:
    seed: int = 0
    train: tuple[int, ...] = (10, 14, 12)
    validation: tuple[int, ...] = (4, 4, 4)
    test: int = 12
    # median (z, y, x) in voxels. As nnU-Net's default plan's patch covers the real data's median case,
    # the tiny plan's patch (32x48x48) covers the phantom's, so whole-volume and tiled inference see the
    # same context as training.
    shape: tuple[int, ...] = (32, 48, 48)
    # lesion volume as a share of the gland's (about 3% to 30% on real data; each case varies by +-30%);
    # None: the lesion spans 55-95% of the gland's local radius, as in the default phantom
    lesion_share: float | None = None
    # scale of every lesion's intensity difference to its gland: below 1 the subtypes look more alike
    contrast: float = 1.0

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise InputError(None, f"--seed must be >= 0, got {self.seed}")
        for option, counts in (("--train", self.train), ("--validation", self.validation)):
            if len(counts) != NUM_SUBTYPES or min(counts) < 0:
                raise InputError(
                    None, f"{option} needs {NUM_SUBTYPES} non-negative case counts (one per subtype), got {counts}"
                )
            if sum(counts) == 0:
                raise InputError(None, f"{option} needs at least one case")
        if self.test < 0:
            raise InputError(None, f"--test must be >= 0, got {self.test}")
        if len(self.shape) != 3 or not all(MIN_SIZE <= n <= MAX_SIZE for n in self.shape):
            raise InputError(
                None, f"--shape needs three sizes (z,y,x) of {MIN_SIZE} to {MAX_SIZE} voxels, got {self.shape}"
            )
        if self.lesion_share is not None and not 0 < self.lesion_share <= MAX_LESION_SHARE:
            raise InputError(None, f"--lesion-share must be in (0, {MAX_LESION_SHARE}], got {self.lesion_share}")
        if not self.contrast > 0:
            raise InputError(None, f"--contrast must be > 0, got {self.contrast}")


@dataclass
class PhantomCase:
    image: np.ndarray  # int16 HU, (z, y, x)
    labels: np.ndarray  # uint8 {0,1,2}, (z, y, x)
    spacing: tuple[float, float, float]  # (x, y, z) mm
    origin: tuple[float, float, float]  # (x, y, z) mm


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: Sequence[float]) -> np.ndarray:
    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / (field.std() + 1e-6)


def _cylinder_z(yy, xx, cy, cx, radius):
    return (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2


def synthesize_case(
    rng: np.random.Generator,
    shape: Sequence[int],
    subtype: int,
    lesion_share: float | None = None,
    contrast: float = 1.0,
) -> PhantomCase:
    """One phantom case of median ``shape`` (z, y, x); its own size is jittered by up to 15% per axis.
    ``lesion_share`` and ``contrast`` as in :class:`PhantomSpec`."""
    size = tuple(max(16, round(s * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER))) for s in shape)
    in_plane = rng.uniform(0.68, 0.82)
    spacing_zyx = np.array([rng.uniform(2.0, 2.5), in_plane, in_plane], dtype=np.float32)
    extent = np.array(size) * spacing_zyx
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2) * s for n, s in zip(size, spacing_zyx)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    half_y = extent[1] / 2
    enhancement = rng.uniform(0.8, 1.2)  # contrast phase / dose per case

    image = -100 + 6 * _smooth_noise(rng, size, (1, 2, 2))  # retroperitoneal fat

    # bowel loops anterior to the gland, some with air
    for _ in range(rng.integers(2, 5)):
        centre = (
            rng.uniform(-0.4, 0.4) * extent[0],
            rng.uniform(-0.5, -0.15) * extent[1],
            rng.uniform(-0.45, 0.45) * extent[2],
        )
        radii = rng.uniform(0.08, 0.16, 3) * extent.min() * np.array([1.6, 1.0, 1.3])
        inside = ((zz - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2 + (
            (xx - centre[2]) / radii[2]
        ) ** 2 < 1
        image[inside] = rng.uniform(25, 50)
        if rng.random() < 0.5:
            air = inside & (yy < centre[1] - 0.4 * radii[1])
            image[air] = -850
    # left kidney, posterior-left corner
    kidney = ((yy - 0.42 * extent[1]) / (0.2 * extent[1])) ** 2 + ((xx - 0.4 * extent[2]) / (0.14 * extent[2])) ** 2 < 1
    image[kidney] = 150 * enhancement
    # vertebral body behind everything, partly in the field of view
    spine_x = rng.uniform(-0.15, 0.05) * extent[2]
    spine_r = 0.2 * min(extent[1], extent[2])
    spine = _cylinder_z(yy, xx, half_y + 0.45 * spine_r, spine_x, spine_r)
    image[spine] = 250
    image[spine & ~_cylinder_z(yy, xx, half_y + 0.45 * spine_r, spine_x, spine_r - 1.5)] = 700
    aorta = _cylinder_z(yy, xx, 0.28 * extent[1], spine_x + 0.18 * extent[2], 0.07 * min(extent[1], extent[2]))
    image[aorta] = rng.uniform(180, 240) * enhancement

    # pancreas centreline: a curved tube running head (t=0) to tail (t=1)
    t = np.linspace(0, 1, 256, dtype=np.float32)
    bend = rng.uniform(0.25, 0.55) * rng.choice([-1, 1])
    centre_line = np.stack(
        [
            rng.uniform(-0.25, 0.25) * (t - 0.5) * extent[0] + rng.uniform(-0.05, 0.05) * extent[0],
            (bend * ((t - 0.5) ** 2 - 1 / 12) + 0.04 * np.sin(2 * np.pi * t * rng.uniform(0.8, 1.6))) * extent[1]
            + rng.uniform(-0.06, 0.06) * extent[1],
            (t - 0.5) * 0.85 * extent[2],
        ],
        axis=1,
    )
    radius_scale = rng.uniform(0.12, 0.16) * min(extent[1], extent[2])
    radius = radius_scale * (1.25 - 0.45 * t)  # thick head, thin tail
    z_stretch = 1.6  # craniocaudal extent of the cross-section relative to its AP thickness
    squash = np.array([1 / z_stretch, 1, 1], dtype=np.float32)
    points = np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1) * squash
    # Only distances up to the thickest radius matter; the bound makes the query fast.
    distance, nearest = cKDTree(centre_line * squash).query(points, distance_upper_bound=radius.max() * 1.5)
    distance = distance.reshape(size).astype(np.float32)
    local_radius = radius[np.minimum(nearest, len(t) - 1)].reshape(size)
    lobulation = 1 + 0.12 * _smooth_noise(rng, size, (1, 2.5, 2.5))
    gland = distance < local_radius * lobulation

    # splenic vein along the back of the body/tail, SMV/portal vein behind the neck
    vein_hu = rng.uniform(150, 200) * enhancement
    offset = np.zeros_like(centre_line)
    offset[:, 1] = radius * 1.05 + 1.5
    vein_radius = 0.035 * min(extent[1], extent[2]) * z_stretch
    splenic = cKDTree((centre_line + offset)[t > 0.35] * squash).query(points, distance_upper_bound=vein_radius)[0]
    image[splenic.reshape(size) < vein_radius] = vein_hu
    neck = centre_line[int(0.3 * len(t))]
    image[_cylinder_z(yy, xx, neck[1] + radius[0] * 0.9, neck[2], 0.055 * min(extent[1], extent[2]))] = vein_hu

    pancreas_hu = rng.uniform(85, 125) * enhancement
    image[gland] = (pancreas_hu + 9 * _smooth_noise(rng, size, (0.6, 1.2, 1.2)))[gland]

    lesion_volume = None
    if lesion_share is not None:
        share = lesion_share * rng.uniform(1 - LESION_SHARE_JITTER, 1 + LESION_SHARE_JITTER)
        lesion_volume = share * np.count_nonzero(gland) * float(np.prod(spacing_zyx))
    lesion, lesion_image = _lesion(
        rng, subtype, zz, yy, xx, centre_line, radius, z_stretch, pancreas_hu, size, lesion_volume, contrast
    )
    image = np.where(lesion > 0, lesion * lesion_image + (1 - lesion) * image, image)
    labels = np.zeros(size, dtype=np.uint8)
    labels[gland] = PANCREAS
    labels[lesion > 0.5] = LESION

    image = gaussian_filter(image, (0.4, 0.7, 0.7))  # scanner blur / partial volume
    image += rng.normal(0, rng.uniform(8, 16), size)
    image = np.clip(np.rint(image), HU_MIN, HU_MAX).astype(np.int16)
    origin = (float(rng.uniform(-60, 60)), float(rng.uniform(-220, -120)), float(rng.uniform(-500, -300)))
    spacing = tuple(float(s) for s in spacing_zyx[::-1])
    return PhantomCase(image, labels, spacing, origin)


def _lesion(rng, subtype, zz, yy, xx, centre_line, radius, z_stretch, pancreas_hu, size, volume_mm3=None, contrast=1.0):
    """Soft lesion membership in [0, 1] and the lesion's own intensities. ``volume_mm3``: the volume of the
    lesion's ellipsoid (its scale then follows from it instead of the subtype's range)."""
    index = int(rng.uniform(0.2, 0.8) * len(centre_line))
    local = radius[index]
    scale, irregularity, edge = {
        0: (rng.uniform(0.6, 0.85), 0.22, 0.3),
        1: (rng.uniform(0.65, 0.95), 0.03, 0.05),
        2: (rng.uniform(0.55, 0.8), 0.08, 0.12),
    }[subtype]
    elongation = np.array([z_stretch, 1.0, rng.uniform(1.0, 1.6)], dtype=np.float32)
    if volume_mm3 is not None:
        scale = (volume_mm3 / (4 / 3 * np.pi * local**3 * float(np.prod(elongation)))) ** (1 / 3)
    semi = local * scale * elongation
    shift = rng.uniform(-0.2, 0.2, 3) * local * np.array([z_stretch, 1, 1])
    centre = centre_line[index] + shift
    rho = np.sqrt(
        ((zz - centre[0]) / semi[0]) ** 2 + ((yy - centre[1]) / semi[1]) ** 2 + ((xx - centre[2]) / semi[2]) ** 2
    )
    rho = rho * (1 + irregularity * _smooth_noise(rng, size, (1, 2, 2)))
    membership = np.clip((1 - rho) / edge + 0.5, 0, 1).astype(np.float32)

    if subtype == 0:
        values = pancreas_hu - rng.uniform(25, 60) + 14 * _smooth_noise(rng, size, (0.6, 1, 1))
    elif subtype == 1:
        values = rng.uniform(0, 30) + 4 * _smooth_noise(rng, size, (0.6, 1, 1))
        values = np.where((rho > 0.82) & (rho < 1.05), values + 35, values)  # enhancing wall
        if rng.random() < 0.5:
            values = np.where(np.abs(xx - centre[2]) < 0.7, values + 30, values)  # septum
    else:
        values = pancreas_hu + rng.uniform(-5, 50) + 8 * _smooth_noise(rng, size, (0.6, 1, 1))
        if rng.random() < 0.5:
            values = np.where(rho < 0.35, values - 45, values)  # central scar
    values = pancreas_hu + contrast * (values - pancreas_hu)
    return membership, values.astype(np.float32)


def _to_sitk(array: np.ndarray, case: PhantomCase) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(case.spacing)
    image.SetOrigin(case.origin)
    return image


def _mask_array(case: PhantomCase, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < FLOAT_MASK_FRACTION:
        return np.where(case.labels == PANCREAS, FLOAT_LABEL_ONE, case.labels.astype(np.float32))
    return case.labels


def _write_case(case: PhantomCase, rng: np.random.Generator, image_path: Path, mask_path: Path | None) -> None:
    sitk.WriteImage(_to_sitk(case.image, case), str(image_path), useCompression=True)
    if mask_path is not None:
        sitk.WriteImage(_to_sitk(_mask_array(case, rng), case), str(mask_path), useCompression=True)


@dataclass(frozen=True)
class _Planned:
    split: str
    index: int
    name: str
    subtype: int


def _plan_cases(spec: PhantomSpec) -> list[_Planned]:
    rng = np.random.default_rng([spec.seed, 0])
    subtypes = {
        "train": [k for k, n in enumerate(spec.train) for _ in range(n)],
        "validation": [k for k, n in enumerate(spec.validation) for _ in range(n)],
        "test": list(rng.permutation([i % NUM_SUBTYPES for i in range(spec.test)])),
    }
    total = sum(len(v) for v in subtypes.values())
    ids = iter(rng.permutation(total) + 1)
    planned = []
    for split, kinds in subtypes.items():
        for k in kinds:
            case_id = f"{next(ids):03d}"
            name = f"quiz_{case_id}" if split == "test" else f"quiz_{k}_{case_id}"
            planned.append(_Planned(split, len(planned), name, int(k)))
    return planned


def generate_phantom(out_dir: Path, spec: PhantomSpec, overwrite: bool = False, progress=None) -> Path:
    """Write the phantom to ``out_dir`` (built under a temporary name, then renamed into place)."""
    out_dir = Path(out_dir)
    check_staged_output_dir(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(out_dir, "output folder exists and is not empty (use --overwrite to replace it)")
    planned = _plan_cases(spec)
    with staged_directory(out_dir) as stage:
        test_key: dict[str, int] = {}
        for case in planned if progress is None else progress(planned, len(planned), "phantom"):
            rng = np.random.default_rng([spec.seed, 1, case.index])
            data = synthesize_case(rng, spec.shape, case.subtype, spec.lesion_share, spec.contrast)
            if case.split == "test":
                (stage / "test").mkdir(exist_ok=True)
                (stage / "test_key").mkdir(exist_ok=True)
                _write_case(
                    data,
                    rng,
                    stage / "test" / f"{case.name}_0000.nii.gz",
                    stage / "test_key" / f"{case.name}.nii.gz",
                )
                test_key[f"{case.name}.nii.gz"] = case.subtype
            else:
                folder = stage / case.split / f"subtype{case.subtype}"
                folder.mkdir(parents=True, exist_ok=True)
                _write_case(data, rng, folder / f"{case.name}_0000.nii.gz", folder / f"{case.name}.nii.gz")
        if test_key:
            (stage / "test_key" / "labels.csv").write_text(format_subtype_csv(test_key.items()))
        (stage / "phantom.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
    return out_dir
