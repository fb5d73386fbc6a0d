import json
import math

from nnunet_mtl.cli import main
from nnunet_mtl.inference.benchmark import LABELS, METHODS


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
    # (a') does stock's work (same tiles, 8 flips) with our code: the same masks as stock nnU-Net
    assert methods["a_ref"]["forward_passes_per_case"] >= 8
    for region in ("whole", "lesion"):
        value = methods["a_ref"]["dice_to_a"][region]
        assert value is None or value > 0.99
    assert "class_agreement_with_a" not in stock and stock["subtypes"] is None  # stock has no subtype head
    assert methods["c"]["forward_passes_per_case"] == 1 and methods["c"]["paths"] == ["whole"]
    assert methods["d"]["forward_passes_per_case"] == 8
    assert methods["b"]["forward_passes_per_case"] == 1
    assert methods["c_alt"]["precision"] == "bf16" and methods["c"]["precision"] == "fp32"
    # scores against the truth are those of `nnunet-mtl evaluate` on each method's masks
    truth = methods["c"]["truth"]
    assert math.isclose(truth["delta_whole_vs_a"], truth["dice_whole"] - stock["truth"]["dice_whole"])
    for key in METHODS:
        assert len(list((out / key).glob("quiz_*.nii.gz"))) == 2
