import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from nnunet_mtl.cli import main
from nnunet_mtl.data.layout import scan_assignment_data


def _labels(path):
    return np.rint(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).astype(np.uint8)


def _write(array, like, path):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.CopyInformation(sitk.ReadImage(str(like)))
    sitk.WriteImage(image, str(path), useCompression=True)


def _write_csv(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Names", "Subtype"])
        writer.writerows(rows)


def _imperfect(truth, k):
    """A deliberately imperfect prediction, a different flaw per case."""
    prediction = truth.copy()
    flaw = k % 4
    if flaw == 0:  # pancreas grown by one voxel in-plane
        grown = np.zeros_like(truth, bool)
        grown[:, 1:, :] |= truth[:, :-1, :] > 0
        prediction[(prediction == 0) & grown] = 1
    elif flaw == 1:  # lesion shifted by two voxels
        lesion = np.roll(truth == 2, 2, axis=2)
        prediction[truth == 2] = 1
        prediction[lesion & (truth > 0)] = 2
    elif flaw == 2:  # lesion missed, pancreas thinned
        prediction[truth == 2] = 1
        prediction[:, ::3, :][prediction[:, ::3, :] == 1] = 0
    else:  # lesion over-called
        prediction[(truth == 1)] = np.where(np.arange((truth == 1).sum()) % 2 == 0, 2, 1)
    return prediction


@pytest.fixture
def scored(phantom_copy, tmp_path):
    """Imperfect predictions for every labelled case of the small phantom, plus an integer reference."""
    data = scan_assignment_data(phantom_copy)
    cases = data.labelled
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    # one case has no lesion in truth nor prediction: Dice undefined for that region
    empty = cases[0]
    truth = _labels(empty.mask)
    truth[truth == 2] = 1
    _write(truth, empty.mask, empty.mask)
    true, predicted = [], []
    for k, case in enumerate(cases):
        truth = _labels(case.mask)
        _write(truth, case.mask, ref_dir / f"{case.name}.nii.gz")
        _write(_imperfect(truth, k) if case is not empty else truth, case.mask, pred_dir / f"{case.name}.nii.gz")
        true.append(case.subtype)
        predicted.append(case.subtype if k % 3 else (case.subtype + 1) % 3)
    _write_csv(pred_dir / "subtype_results.csv", [(f"{c.name}.nii.gz", p) for c, p in zip(cases, predicted)])
    _write_csv(ref_dir / "labels.csv", [(f"{c.name}.nii.gz", c.subtype) for c in cases])
    return phantom_copy, pred_dir, ref_dir, true, predicted, [c.name for c in cases]


def test_region_dice_equals_nnunet_folder_evaluation(scored, tmp_path):
    data_dir, pred_dir, ref_dir, *_ = scored
    truth_dir = tmp_path / "truth"
    truth_dir.mkdir()
    for split in ("train", "validation"):  # the evaluator reads the layout (float masks) directly
        for mask in (data_dir / split).rglob("quiz_*.nii.gz"):
            if not mask.name.endswith("_0000.nii.gz"):
                (truth_dir / mask.name).write_bytes(mask.read_bytes())
    assert main(["evaluate", "--pred", str(pred_dir), "--truth", str(truth_dir), "--out", str(tmp_path / "ev")]) == 0
    ours = json.loads((tmp_path / "ev" / "metrics.json").read_text())

    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    theirs = compute_metrics_on_folder(
        str(ref_dir), str(pred_dir), None, SimpleITKIO(), ".nii.gz", [(1, 2), (2,)], num_processes=1
    )
    per_case = {c["name"]: c for c in ours["cases"]}
    for entry in theirs["metric_per_case"]:
        name = entry["reference_file"].split("/")[-1].removesuffix(".nii.gz")
        for region, key in (((1, 2), "dice_whole_pancreas"), ((2,), "dice_lesion")):
            expected = entry["metrics"][region]["Dice"]
            if math.isnan(expected):
                assert per_case[name][key] is None
            else:
                assert per_case[name][key] == pytest.approx(expected, abs=1e-12)
    assert ours["segmentation"]["whole_pancreas"]["mean_dice"] == pytest.approx(theirs["mean"][(1, 2)]["Dice"])
    assert ours["segmentation"]["lesion"]["mean_dice"] == pytest.approx(theirs["mean"][(2,)]["Dice"])
    assert ours["segmentation"]["lesion"]["n_both_empty"] == 1
    # the flaws are real: not a perfect score
    assert ours["segmentation"]["whole_pancreas"]["mean_dice"] < 0.99
    assert ours["segmentation"]["lesion"]["mean_dice"] < 0.9


def test_classification_equals_sklearn_with_truth_from_subtype_folders(scored, tmp_path, capsys):
    data_dir, pred_dir, _, true, predicted, names = scored
    out = tmp_path / "ev"
    truth_dir = tmp_path / "truth_layout"
    truth_dir.mkdir()
    # a split folder of the layout: truth subtypes come from the subtypeK folder names
    for split in ("train", "validation"):
        for folder in (data_dir / split).iterdir():
            target = truth_dir / folder.name
            target.mkdir(exist_ok=True)
            for path in folder.iterdir():
                (target / path.name).write_bytes(path.read_bytes())
    assert main(["evaluate", "--pred", str(pred_dir), "--truth", str(truth_dir), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["classification"]
    assert metrics["macro_f1"] == pytest.approx(f1_score(true, predicted, average="macro"))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(true, predicted))
    assert metrics["confusion_matrix"] == confusion_matrix(true, predicted, labels=[0, 1, 2]).tolist()
    assert metrics["macro_f1"] < 1.0
    printed = capsys.readouterr().out
    assert f"{metrics['macro_f1']:.4f}" in printed
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "metrics.md").read_text()
    assert all(name in markdown for name in names)


def test_flat_truth_with_labels_csv(small_phantom, tmp_path):
    """The phantom's test key: flat masks + labels.csv; a perfect prediction scores 1 everywhere."""
    key = small_phantom / "test_key"
    pred = tmp_path / "pred"
    pred.mkdir()
    for mask in key.glob("*.nii.gz"):
        _write(_labels(mask), mask, pred / mask.name)
    (pred / "subtype_results.csv").write_text((key / "labels.csv").read_text())
    assert main(["evaluate", "--pred", str(pred), "--truth", str(key)]) == 0
    metrics = json.loads((pred / "evaluation" / "metrics.json").read_text())
    assert metrics["segmentation"]["whole_pancreas"]["mean_dice"] == 1.0
    assert metrics["classification"]["macro_f1"] == 1.0
    # an explicit --labels CSV wins over the folder's labels.csv
    wrong = tmp_path / "wrong.csv"
    rows = list(csv.reader((key / "labels.csv").open()))[1:]
    _write_csv(wrong, [(n, (int(s) + 1) % 3) for n, s in rows])
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(pred),
                "--truth",
                str(key),
                "--labels",
                str(wrong),
                "--out",
                str(tmp_path / "ev2"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "ev2" / "metrics.json").read_text())["classification"]["accuracy"] == 0.0


# Bad predictions and truth (geometry, missing masks, CSVs, ...): tests/test_bad_inputs.py.
