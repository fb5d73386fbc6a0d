import csv
import itertools

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import binary_dilation
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from nnunet_mtl.cli import main
from nnunet_mtl.data.labels import LESION, PANCREAS
from nnunet_mtl.data.layout import scan_assignment_data
from nnunet_mtl.data.phantom import FLOAT_LABEL_ONE, PhantomSpec, generate_phantom, synthesize_case
from nnunet_mtl.errors import InputError


def _arrays(folder):
    return {
        p.relative_to(folder).as_posix(): sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
        for p in sorted(folder.rglob("*.nii.gz"))
    }


def test_layout_counts_and_names(small_phantom):
    data = scan_assignment_data(small_phantom)
    assert [c.subtype for c in data.train] == [0, 0, 1, 1, 2, 2]
    assert [c.subtype for c in data.validation] == [0, 1, 2]
    assert len(data.test) == 3
    for case in data.labelled:
        assert case.name.startswith(f"quiz_{case.subtype}_")
        assert case.image.parent.name == f"subtype{case.subtype}"
    with (small_phantom / "test_key" / "labels.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Names", "Subtype"]
    assert sorted(r[0] for r in rows[1:]) == sorted(f"{c.name}.nii.gz" for c in data.test)
    for name, _ in rows[1:]:
        assert (small_phantom / "test_key" / name).is_file()


def test_deterministic_per_seed(tmp_path):
    spec = PhantomSpec(seed=3, train=(1, 1, 1), validation=(1, 0, 0), test=1, shape=(16, 24, 24))
    a = _arrays(generate_phantom(tmp_path / "a", spec))
    b = _arrays(generate_phantom(tmp_path / "b", spec))
    c = _arrays(generate_phantom(tmp_path / "c", PhantomSpec(**{**spec.__dict__, "seed": 4})))
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(k in c and c[k].shape == a[k].shape and np.array_equal(a[k], c[k]) for k in a)


def test_float_label_artefact_in_most_masks(small_phantom):
    data = scan_assignment_data(small_phantom)
    artefact = 0
    for case in data.labelled:
        values = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(case.mask))))
        assert len(values) == 3
        if values.dtype == np.float32:
            assert values[1] == FLOAT_LABEL_ONE == np.float32(1.0000152587890625)
            artefact += 1
    assert artefact > len(data.labelled) / 2


def test_cases_are_anisotropic_and_vary_in_size(small_phantom):
    data = scan_assignment_data(small_phantom)
    images = [sitk.ReadImage(str(c.image)) for c in data.labelled + data.test]
    for image in images:
        sx, sy, sz = image.GetSpacing()
        assert sx == sy and sz > 2 * sx
        assert image.GetPixelID() == sitk.sitkInt16
    assert len({image.GetSize() for image in images}) > len(images) // 2


@pytest.mark.parametrize("subtype", [0, 1, 2])
def test_case_anatomy_in_hounsfield_units(subtype):
    case = synthesize_case(np.random.default_rng([1, subtype]), (40, 56, 56), subtype)
    image, labels = case.image.astype(float), case.labels
    gland = labels == PANCREAS
    lesion = labels == LESION
    assert 60 < np.median(image[gland]) < 170
    assert -140 < np.median(image[labels == 0]) < -40  # mostly fat
    assert (image[labels == 0] > 140).mean() > 0.005  # enhancing vessels, kidney, bone outside the gland
    assert np.std(image[labels == 0] - np.median(image[labels == 0])) > 10  # noise and structure
    assert lesion.sum() > 50
    # the lesion lies inside the gland: most of its rim touches pancreas
    rim = binary_dilation(lesion) & ~lesion
    assert (labels[rim] == PANCREAS).mean() > 0.5


def _lesion_features(n_per_class=30):
    features, classes = [], []
    for subtype in range(3):
        for i in range(n_per_class):
            case = synthesize_case(np.random.default_rng([99, subtype, i]), (24, 40, 40), subtype)
            image = case.image.astype(float)
            lesion = image[case.labels == LESION]
            gland = image[case.labels == PANCREAS]
            features.append([lesion.mean(), lesion.std(), lesion.mean() - gland.mean()])
            classes.append(subtype)
    return np.array(features), np.array(classes)


def test_subtypes_overlap_but_are_learnable():
    features, classes = _lesion_features()
    mean_hu = features[:, 0]
    ranges = [(mean_hu[classes == k].min(), mean_hu[classes == k].max()) for k in range(3)]
    # no single threshold on mean lesion HU separates neighbouring subtypes
    order = np.argsort([np.median(mean_hu[classes == k]) for k in range(3)])
    for a, b in itertools.pairwise(order):
        assert ranges[a][1] > ranges[b][0], f"subtypes {a} and {b} separable by one HU threshold"
    # but the subtypes are learnable from appearance
    accuracy = cross_val_score(LogisticRegression(max_iter=2000), features, classes, cv=5).mean()
    assert accuracy > 0.7


def test_refuses_non_empty_output_and_bad_counts(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert main(["phantom", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0] and str(tmp_path / "out") in err[0]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    with pytest.raises(InputError):
        PhantomSpec(train=(1, 1))


def test_lesion_share_and_contrast_options():
    """The family's knobs: the lesion's share of the gland follows the option; contrast scales every lesion's
    difference to its gland, so the subtypes move towards the gland and each other."""
    for share in (0.04, 0.25):
        shares = []
        for i in range(6):
            case = synthesize_case(np.random.default_rng([7, i]), (32, 48, 48), i % 3, lesion_share=share)
            shares.append(np.count_nonzero(case.labels == 2) / np.count_nonzero(case.labels))
        assert share * 0.6 < np.median(shares) < share * 1.4
    gaps = {}
    for contrast in (1.0, 0.5):
        case = synthesize_case(np.random.default_rng([8, 1]), (32, 48, 48), 1, lesion_share=0.2, contrast=contrast)
        gaps[contrast] = case.image[case.labels == 1].mean() - case.image[case.labels == 2].mean()
    assert 0.35 < gaps[0.5] / gaps[1.0] < 0.65
    with pytest.raises(InputError, match="--lesion-share"):
        PhantomSpec(lesion_share=0.9)
    with pytest.raises(InputError, match="--contrast"):
        PhantomSpec(contrast=0)
