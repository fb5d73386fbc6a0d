import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from nnunet_mtl.cli import main
from nnunet_mtl.evaluation.outputs import summary_rows
from nnunet_mtl.report.content import fmt
from nnunet_mtl.report.render import SECTIONS
from tests.conftest import tree_snapshot

BENCHMARK = Path(__file__).parents[2] / "benchmarks" / "results" / "predict_tiny_cpu.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ReportParser(HTMLParser):
    """Sections, embedded images and table cells of report.html."""

    def __init__(self):
        super().__init__()
        self.sections: list[str] = []
        self.images: list[dict] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._section = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._section = attrs["id"]
            self.sections.append(self._section)
        elif tag == "img":
            self.images.append({**attrs, "section": self._section})
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self.tables.setdefault(self._section, []).append(self._row)
            self._row = None


def parse(report: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(report.read_text())
    return parser


@pytest.fixture(scope="module")
def finished_run(smoke_model, small_phantom, tmp_path_factory):
    """A trained model, its predictions on the test split and their independent evaluation."""
    tmp = tmp_path_factory.mktemp("finished_run")
    model_dir = smoke_model[0]
    pred, evaluation = tmp / "pred", tmp / "evaluation"
    assert main(["predict", "--model-dir", str(model_dir), "-i", str(small_phantom / "test"), "-o", str(pred)]) == 0
    truth = small_phantom / "test_key"
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--out", str(evaluation)]) == 0
    return model_dir, pred, truth, json.loads((evaluation / "metrics.json").read_text())


def check_images(parsed: ReportParser, out: Path) -> None:
    for image in parsed.images:
        assert image["src"].startswith("data:image/png;base64,")
        embedded = base64.b64decode(image["src"].split(",", 1)[1])
        assert embedded.startswith(PNG_MAGIC)
        assert (out / image["data-file"]).read_bytes() == embedded  # the PNG beside the report is the same image


def check_metrics_table(parsed: ReportParser, metrics: dict) -> None:
    rows = {row[0]: row for row in parsed.tables["metrics"][1:]}
    assert rows["Whole pancreas Dice"][2] == fmt(metrics["segmentation"]["whole_pancreas"]["mean_dice"])
    assert rows["Lesion Dice"][2] == fmt(metrics["segmentation"]["lesion"]["mean_dice"])
    assert rows["Subtype macro F1"][2] == fmt(metrics["classification"]["macro_f1"])
    assert rows["Subtype accuracy"][2] == fmt(metrics["classification"]["accuracy"])
    assert [rows[name][1] for name in ("Whole pancreas Dice", "Lesion Dice", "Subtype macro F1")] == [
        ">= 0.91",
        ">= 0.31",
        ">= 0.70",
    ]
    achieved = metrics["segmentation"]["whole_pancreas"]["mean_dice"]
    low, high = metrics["segmentation"]["whole_pancreas"]["mean_dice_ci"]
    assert rows["Whole pancreas Dice"][3] == f"{low:.3f}-{high:.3f}"
    assert rows["Whole pancreas Dice"][4] == ("yes" if achieved >= 0.91 else "no")


def test_report_of_predictions_has_every_section_image_and_number(finished_run, small_phantom, tmp_path, capsys):
    model_dir, pred, truth, metrics = finished_run
    out = tmp_path / "report"
    args = ["report", "--model-dir", str(model_dir), "--pred", str(pred), "--truth", str(truth)]
    args += ["--images", str(small_phantom / "test"), "--benchmark", str(BENCHMARK), "--out", str(out)]
    assert main(args) == 0
    assert str(out / "report.html") in capsys.readouterr().out

    parsed = parse(out / "report.html")
    assert parsed.sections == list(SECTIONS)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    check_metrics_table(parsed, metrics)
    check_images(parsed, out)
    by_section = {}
    for image in parsed.images:
        by_section.setdefault(image["section"], []).append(image["data-file"])
    assert by_section["training"] == ["training_curves.png"]
    assert by_section["confusion"] == ["confusion_matrix.png"]
    assert by_section["calibration"] == ["reliability.png"]
    # every summary metric with its interval, as `evaluate` prints them
    assert [tuple(row) for row in parsed.tables["evaluation"][1:]] == summary_rows(metrics)
    overlays = by_section["overlays"]
    assert len(overlays) == min(4, metrics["num_cases"]) and all(name.startswith("overlay_") for name in overlays)

    # per-case table: every case once, sorted by mean Dice, numbers and subtypes as in metrics.json
    rows = parsed.tables["cases"][1:]
    cases = {c["name"]: c for c in metrics["cases"]}
    assert sorted(row[0] for row in rows) == sorted(cases)
    for row in rows:
        case = cases[row[0]]
        assert row[1:7] == [
            fmt(case["dice_whole_pancreas"]),
            fmt(case["dice_lesion"]),
            fmt(case["nsd_whole_pancreas"]),
            fmt(case["nsd_lesion"]),
            fmt(case["hd95_whole_pancreas_mm"], 2),
            fmt(case["hd95_lesion_mm"], 2),
        ]
        assert row[8:10] == [str(case["subtype_true"]), str(case["subtype_pred"])]
    dice = [(cases[r[0]]["dice_whole_pancreas"], cases[r[0]]["dice_lesion"]) for r in rows]
    defined = [[v for v in pair if v is not None] for pair in dice]
    means = [sum(v) / len(v) if v else -1.0 for v in defined]
    assert means == sorted(means, reverse=True)
    probabilities = (pred / "subtype_probabilities.csv").read_text().splitlines()[1:]
    first = dict(line.split(",", 1) for line in probabilities)
    name = rows[0][0]
    p = [float(v) for v in first[f"{name}.nii.gz"].split(",")]
    assert rows[0][10] == fmt(p[cases[name]["subtype_pred"]], 3)

    # benchmark table: the rows of the benchmark's own Markdown table
    benchmark_rows = parsed.tables["benchmark"]
    assert len(benchmark_rows) == 1 + len(json.loads(BENCHMARK.read_text())["methods"])
    assert benchmark_rows[1][0].startswith("(a) stock nnU-Net")

    markdown = (out / "report.md").read_text()
    assert all(f"## {title}" in markdown for title in SECTIONS.values())
    assert all(f"]({image['data-file']})" in markdown for image in parsed.images)


def test_report_of_the_final_validation(smoke_model, tmp_path):
    model_dir = smoke_model[0]
    out = tmp_path / "report"
    assert main(["report", "--model-dir", str(model_dir), "--out", str(out)]) == 0
    metrics = json.loads((model_dir / "fold_0" / "validation" / "metrics.json").read_text())
    parsed = parse(out / "report.html")
    check_metrics_table(parsed, metrics)
    check_images(parsed, out)
    # images and truth of the validation cases come from the nnU-Net raw dataset
    assert sum(image["section"] == "overlays" for image in parsed.images) == min(4, metrics["num_cases"])
    facts = dict(parsed.tables["summary"])
    assert facts["selected checkpoint (checkpoint_best)"].startswith("epoch ")
    # what the deployed readout reads, from the loaded network's own stage widths
    from nnunet_mtl.inference.model import load_model

    head = load_model(model_dir, (0,), ("best",)).networks[0].head
    statistics_only = not head.readout_weight[:, : sum(head.stage_channels)].any()
    reads = "the intensity statistics only" if statistics_only else "every feature"
    assert (
        facts["subtype readout"] == f"shrinkage LDA fitted on the training split's predicted pooling, reading {reads}"
    )
    # the inference choice made at the end of training: every candidate run, with its numbers
    from nnunet_mtl.inference.choice import read_inference_choice

    tried = read_inference_choice(model_dir, [0]).determined_on["candidates"]
    rows = parsed.tables["inference"]
    assert rows[0][:3] == ["inference", "Dice whole", "Dice lesion"]
    assert [row[0] for row in rows[1:]] == [c["name"] for c in tried]
    assert [row[1] for row in rows[1:]] == [fmt(c["dice"]["whole_pancreas"]) for c in tried]
    assert [row[3] for row in rows[1:]] == [f"{c['correct']}/{c['cases']}" for c in tried]
    assert rows[1][-1] == "reference"
    assert [row[6] for row in rows[1:]] == [", ".join(f"{p} {n}" for p, n in sorted(c["paths"].items())) for c in tried]


@pytest.mark.parametrize(
    ("kind", "phrase"),
    [
        ("pred-without-truth", "--pred and --truth go together"),
        ("missing-model", "model folder not found"),
        ("out-is-not-a-report", "is not an earlier report folder"),
        ("bad-benchmark", "not valid JSON"),
        ("model-without-checkpoint", "no fold_*/ with checkpoint_final.pth or checkpoint_latest.pth"),
        ("out-is-a-file", "output folder cannot be created"),
        ("corrupt-prediction", "corrupt or truncated gzip data"),
        ("missing-images", "images folder not found"),
    ],
)
def test_bad_report_input_is_one_line_and_writes_nothing(finished_run, tmp_path, capsys, kind, phrase):
    model_dir, pred, truth, _ = finished_run
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["report", "--model-dir", str(model_dir), "--out", str(out / "report")]
    if kind == "pred-without-truth":
        args += ["--pred", str(pred)]
    elif kind == "missing-model":
        args[2] = str(tmp_path / "nowhere")
    elif kind == "out-is-not-a-report":
        args[-1] = str(out)
    elif kind == "bad-benchmark":
        (tmp_path / "benchmark.json").write_text("{")
        args += ["--benchmark", str(tmp_path / "benchmark.json")]
    elif kind == "model-without-checkpoint":
        empty_model = tmp_path / "model"
        (empty_model / "fold_0").mkdir(parents=True)
        args[2] = str(empty_model)
    elif kind == "out-is-a-file":
        args[-1] = str(out / "notes.txt" / "report")
    elif kind == "corrupt-prediction":
        damaged = Path(shutil.copytree(pred, tmp_path / "damaged"))
        mask = sorted(damaged.glob("*.nii.gz"))[0]
        mask.write_bytes(mask.read_bytes()[:200])
        args += ["--pred", str(damaged), "--truth", str(truth)]
    elif kind == "missing-images":
        args += ["--pred", str(pred), "--truth", str(truth), "--images", str(tmp_path / "no-images")]
    before = tree_snapshot(out)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nnunet-mtl: error: ") and phrase in err
    assert tree_snapshot(out) == before
