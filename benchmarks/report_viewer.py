"""The report's size and opening time with the case viewer, for a real-size validation set.

Writes ``--cases`` phantom cases of median ``--shape`` (default: the real validation set, 36 cases of
64 x 119 x 179 voxels), predictions that are the truth shifted and eroded by varying amounts (a spread
of Dice, no model needed), scores them as ``nnunet-mtl evaluate`` does, builds the report from them and,
where Chromium and Selenium are installed, opens it headless and times it to the viewer's first case.

    python benchmarks/report_viewer.py [--cases 36] [--shape 64,119,179] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import binary_erosion

REAL_SHAPE = (64, 119, 179)  # median (z, y, x) of the real validation set
REAL_CASES = 36


def write_cases(folder: Path, cases: int, shape: tuple[int, ...], seed: int = 0) -> tuple[Path, Path, Path]:
    """images/, truth/ (with labels.csv) and pred/ (with subtype_probabilities.csv) of ``cases`` cases."""
    from nnunet_mtl.data.phantom import synthesize_case
    from nnunet_mtl.data.subtype_csv import write_subtype_csv, write_subtype_outputs

    images, truth, pred = (folder / name for name in ("images", "truth", "pred"))
    for path in (images, truth, pred):
        path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    subtypes, predicted, probabilities = {}, {}, {}
    for index in range(cases):
        name, subtype = f"case_{index:03d}", index % 3
        case = synthesize_case(np.random.default_rng([seed, index]), shape, subtype)
        labels = case.labels
        shifted = np.roll(labels, int(rng.integers(0, 4)), axis=2)  # a spread of whole-pancreas Dice
        lesion = binary_erosion(shifted == 2, iterations=int(rng.integers(0, 3)))  # and of lesion Dice
        guess = np.where(lesion, 2, np.where(shifted > 0, 1, 0)).astype(np.uint8)
        for array, path in (
            (case.image, images / f"{name}_0000.nii.gz"),
            (labels, truth / f"{name}.nii.gz"),
            (guess, pred / f"{name}.nii.gz"),
        ):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing(case.spacing)
            image.SetOrigin(case.origin)
            sitk.WriteImage(image, str(path), useCompression=True)
        p = rng.dirichlet(np.ones(3))
        subtypes[name], predicted[name], probabilities[name] = subtype, int(p.argmax()), p.tolist()
    write_subtype_csv(truth / "labels.csv", subtypes)
    write_subtype_outputs(pred, predicted, probabilities)
    return images, truth, pred


def stub_run():
    """A five-epoch training log: the report's curves need one, the viewer does not."""
    from nnunet_mtl.report.sources import TrainingRun

    epochs = 5
    log = {key: [0.5] * epochs for key in ("train_losses", "train_seg_losses", "val_losses", "train_cls_losses")}
    log |= {key: [0.5] * epochs for key in ("val_cls_losses", "wv_dice_whole", "wv_dice_lesion", "wv_macro_f1")}
    log |= {"wv_combined": [0.5] * epochs, "lrs": [0.01] * epochs, "phase": [1, 1, 2, 2, 2]}
    log |= {"dice_per_class_or_region": [[0.5, 0.5]] * epochs, "epoch_start_timestamps": list(range(epochs))}
    log |= {"epoch_end_timestamps": [t + 1.0 for t in range(epochs)]}
    return TrainingRun("stub", 0, log, 4, True, {"loss": {"phase1_epochs": 2}})


def build(folder: Path, cases: int, shape: tuple[int, ...]) -> tuple[Path, float]:
    from nnunet_mtl.evaluation.evaluate import evaluate_folder
    from nnunet_mtl.report.build import build_report
    from nnunet_mtl.report.sources import CaseFiles, ReportSources, read_probabilities

    images, truth, pred = write_cases(folder, cases, shape)
    metrics = evaluate_folder(pred, truth, truth / "labels.csv").to_json()
    names = [c["name"] for c in metrics["cases"]]
    files = {n: CaseFiles(pred / f"{n}.nii.gz", truth / f"{n}.nii.gz", images / f"{n}_0000.nii.gz") for n in names}
    sources = ReportSources(folder, stub_run(), metrics, "synthetic", read_probabilities(pred), files)
    start = time.perf_counter()
    report = build_report(sources, folder / "report")
    return report, time.perf_counter() - start


def time_to_viewer(report: Path, tries: int = 3) -> list[float] | None:
    """Seconds from navigation to the viewer showing its first case, per try (None: no browser here)."""
    import shutil

    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return None
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--enable-unsafe-swiftshader", "--window-size=1280,900"):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium")
    seconds = []
    for _ in range(tries):
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        try:
            start = time.perf_counter()
            driver.get(report.as_uri())
            while driver.execute_script("return document.getElementById('viewer').dataset.state") == "loading":
                if time.perf_counter() - start > 120:
                    raise TimeoutError("viewer not ready in 120 s")
                time.sleep(0.02)
            seconds.append(round(time.perf_counter() - start, 2))
        finally:
            driver.quit()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=REAL_CASES)
    parser.add_argument("--shape", default=",".join(map(str, REAL_SHAPE)), help="median z,y,x")
    parser.add_argument("--out", type=Path, help="folder for report_viewer.json (default: print only)")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        report, build_s = build(folder, args.cases, shape)
        html = report.read_text()
        result = {
            "cases": args.cases,
            "median_shape_zyx": list(shape),
            "report_html_mb": round(report.stat().st_size / 1e6, 2),
            "cases_embedded": html.count('class="viewer-case"'),
            "build_s": round(build_s, 1),
            "open_to_viewer_ready_s": time_to_viewer(report),
        }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report_viewer.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
