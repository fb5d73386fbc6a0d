import json
import math

import pytest
import SimpleITK as sitk
import torch

from nnunet_mtl.benchmark.run import LABELS, METHODS, class_agreement, markdown_table
from nnunet_mtl.cli import main
from nnunet_mtl.precision import resolve_precision


@pytest.mark.slow
def test_benchmark_compares_all_methods_on_the_same_weights(smoke_model, small_phantom, tmp_path, capsys):
    model_dir = smoke_model[0]
    out = tmp_path / "bench"
    args = ["benchmark", "--model-dir", str(model_dir), "-i", str(small_phantom / "test"), "--out", str(out)]
    assert main([*args, "--truth", str(small_phantom / "test_key"), "--max-cases", "2"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "benchmark.json").read_text())
    methods = result["methods"]
    assert list(methods) == list(METHODS)
    assert all(LABELS[key] in printed for key in METHODS)
    assert (out / "benchmark.md").read_text().strip() in printed

    stock = methods["a"]
    for row in methods.values():
        assert len(row["seconds_per_case"]) == 2
        assert math.isclose(row["speedup_vs_a"], stock["median_seconds_per_case"] / row["median_seconds_per_case"])
        assert row["peak_rss_mib"] > 0
    # (a') does stock's work (same tiles, 8 flips) with our code: nearly the same masks as stock nnU-Net.
    # Not exactly: stock sums the tiles in float16, and the smoke model (a few epochs) has voxels near 0.5
    # in its small lesions, where that rounding flips the label. One such voxel in a 20-voxel lesion costs
    # 0.05 of lesion Dice (CI machines measured 0.988 and 0.944), so the bound is on the voxels that differ;
    # tests/inference/test_forward.py compares the logits themselves to stock's.
    assert methods["a_ref"]["forward_passes_per_case"] >= 8
    assert methods["a_ref"]["dice_to_a"]["whole"] > 0.97
    differing = total = 0
    for name in (f.name for f in (out / "a").glob("quiz_*.nii.gz")):
        stock_mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "a" / name)))
        ours_mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "a_ref" / name)))
        differing, total = differing + int((stock_mask != ours_mask).sum()), total + stock_mask.size
    assert methods["a_ref"]["voxels_differing_from_a"] == differing
    assert math.isclose(methods["a_ref"]["voxel_share_differing_from_a"], differing / total)
    assert differing <= 0.001 * total
    assert "class_agreement_with_a" not in stock and stock["subtypes"] is None  # stock has no subtype head
    reference = methods["a_ref"]["subtypes"]
    for key in ("b", "c", "d", "c_alt"):
        agree, total = methods[key]["class_agreement_cases"]
        assert total == 2 and agree == sum(methods[key]["subtypes"][n] == reference[n] for n in reference)
        assert len(methods[key]["class_disagreements"]) == total - agree
    assert methods["c"]["forward_passes_per_case"] == 1 and methods["c"]["paths"] == ["whole"]
    assert methods["d"]["forward_passes_per_case"] == 8
    assert methods["b"]["forward_passes_per_case"] == 1
    assert methods["c"]["precision"] == resolve_precision("auto", torch.device("cpu"))  # bf16 where the CPU has units
    assert {methods["c"]["precision"], methods["c_alt"]["precision"]} == {"fp32", "bf16"}
    # scores against the truth are those of `nnunet-mtl evaluate` on each method's masks
    truth = methods["c"]["truth"]
    assert math.isclose(truth["delta_whole_vs_a"], truth["dice_whole"] - stock["truth"]["dice_whole"])
    for key in METHODS:
        assert len(list((out / key).glob("quiz_*.nii.gz"))) == 2


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_class_agreement_counts_cases_and_names_the_differing_ones():
    names = [f"quiz_{i:03d}" for i in range(12)]
    reference = {
        "subtypes": {n: i % 3 for i, n in enumerate(names)},
        "subtype_probabilities": {n: [0.8 if c == i % 3 else 0.1 for c in range(3)] for i, n in enumerate(names)},
    }
    reference["subtype_probabilities"]["quiz_004"] = [0.30, 0.36, 0.34]  # a near tie, subtype 1
    ours = {
        "subtypes": {**reference["subtypes"], "quiz_004": 2},
        "subtype_probabilities": {**reference["subtype_probabilities"], "quiz_004": [0.2, 0.3, 0.5]},
    }
    result = class_agreement(ours, reference, names)
    assert result["class_agreement_cases"] == [11, 12]
    assert math.isclose(result["class_agreement_with_a"], 11 / 12)
    low, high = result["class_agreement_ci95"]
    assert low < 11 / 12 < high
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip((low, high), _wilson(11, 12)))
    (differing,) = result["class_disagreements"]
    assert differing["case"] == "quiz_004" and (differing["subtype"], differing["reference_subtype"]) == (2, 1)
    assert math.isclose(differing["reference_margin"], 0.02)
    # the table shows the count and the interval, not only a percentage
    row = {**result, "median_seconds_per_case": 1.0, "speedup_vs_a": 1.0, "precision": "fp32", "peak_rss_mib": 1}
    table = markdown_table({"methods": {"c": row}, "truth": None, "device": "cpu"})
    assert f"92% (11/12; CI {low:.0%}-{high:.0%})" in table
    # a benchmark.json of an earlier version (a share only) still renders, e.g. in `nnunet-mtl report`
    older = {"class_agreement_with_a": 11 / 12, **{k: v for k, v in row.items() if not k.startswith("class")}}
    assert "| 92% |" in markdown_table({"methods": {"c": older}, "truth": None, "device": "cpu"})
    counted = {**row, "voxels_differing_from_a": 3, "voxel_share_differing_from_a": 3 / 60000}
    assert "| 3 (0.005%) |" in markdown_table({"methods": {"c": counted}, "truth": None, "device": "cpu"})


@pytest.mark.slow
def test_benchmark_runs_the_chosen_rows_besides_the_references(smoke_model, small_phantom, tmp_path):
    out = tmp_path / "bench"
    argv = ["benchmark", "--model-dir", str(smoke_model[0]), "-i", str(small_phantom / "test"), "--out", str(out)]
    assert main([*argv, "--max-cases", "1", "--methods", "c"]) == 0
    methods = json.loads((out / "benchmark.json").read_text())["methods"]
    assert list(methods) == ["a", "a_ref", "c"]
    assert methods["c"]["class_agreement_cases"][1] == 1
