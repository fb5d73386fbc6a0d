"""`nnunet-mtl compare` on two prediction folders with known differences."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.stats import binomtest, wilcoxon

from nnunet_mtl.cli import main
from nnunet_mtl.data.layout import scan_assignment_data
from nnunet_mtl.data.subtype_csv import write_subtype_csv


def _write_like(array, like, path):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.CopyInformation(sitk.ReadImage(str(like)))
    sitk.WriteImage(image, str(path), useCompression=True)


@pytest.fixture
def two_folders(phantom_copy, tmp_path):
    """A = the truth itself with the right subtypes; B = lesions of the first two cases called pancreas and
    the subtypes of cases 2 and 3 wrong."""
    cases = scan_assignment_data(phantom_copy).labelled
    truth_dir, a, b = tmp_path / "truth", tmp_path / "a", tmp_path / "b"
    for folder in (truth_dir, a, b):
        folder.mkdir()
    subtypes_a, subtypes_b = {}, {}
    for k, case in enumerate(cases):
        labels = np.rint(sitk.GetArrayFromImage(sitk.ReadImage(str(case.mask)))).astype(np.uint8)
        _write_like(labels, case.mask, truth_dir / f"{case.name}.nii.gz")
        shutil.copy(truth_dir / f"{case.name}.nii.gz", a / f"{case.name}.nii.gz")
        if k < 2:
            labels[labels == 2] = 1
        _write_like(labels, case.mask, b / f"{case.name}.nii.gz")
        subtypes_a[case.name] = case.subtype
        subtypes_b[case.name] = (case.subtype + 1) % 3 if k in (2, 3) else case.subtype
    write_subtype_csv(truth_dir / "labels.csv", subtypes_a)
    write_subtype_csv(a / "subtype_results.csv", subtypes_a)
    write_subtype_csv(b / "subtype_results.csv", subtypes_b)
    return truth_dir, a, b, len(cases)


def test_compare_finds_the_known_differences(two_folders, tmp_path, capsys):
    truth_dir, a, b, n = two_folders
    out = tmp_path / "comparison"
    args = ["compare", "--pred", str(a), "--pred", str(b), "--truth", str(truth_dir), "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Dice lesion" in printed and "McNemar" in printed
    rows = {row["metric"]: row for row in json.loads((out / "comparison.json").read_text())["rows"]}

    lesion = rows["dice_lesion"]
    assert lesion["mean_a"] == 1.0
    assert lesion["difference"]["value"] == pytest.approx(-2 / n)  # two cases from 1 to 0
    low, high = lesion["difference"]["ci"]
    assert low <= -2 / n <= high <= 0
    differences = np.array([-1.0, -1.0] + [0.0] * (n - 2))
    assert lesion["p_value"] == pytest.approx(wilcoxon(differences).pvalue)
    whole = rows["dice_whole_pancreas"]
    assert whole["difference"] == {"value": 0.0, "ci": [0.0, 0.0], "n": n} and whole["p_value"] == 1.0
    assert rows["hd95_lesion_mm"]["difference"]["n"] == n - 2  # undefined where B has no lesion

    correct = rows["subtype_correct"]
    assert correct["discordant"] == {"only_a_correct": 2, "only_b_correct": 0}
    assert correct["p_value"] == pytest.approx(binomtest(0, 2, 0.5).pvalue)
    assert correct["difference"]["value"] == pytest.approx(-2 / n)
    assert rows["macro_f1"]["mean_a"] == 1.0 and rows["macro_f1"]["difference"]["value"] < 0
    assert "| Dice lesion |" in (out / "comparison.md").read_text()


def test_compare_needs_two_folders(two_folders, capsys):
    truth_dir, a, _, _ = two_folders
    assert main(["compare", "--pred", str(a), "--truth", str(truth_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give --pred exactly twice" in err
