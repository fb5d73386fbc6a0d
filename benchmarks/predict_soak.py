"""Soak: ``nnunet-mtl predict`` on a folder of many small cases; resident memory and time per case over the run.

Without ``--model-dir`` it first trains the tests' 3-epoch smoke model (the small phantom of tests/conftest.py,
the tiny plan, ``nnUNetTrainerMultitaskSmoke`` through ``nnUNetv2_train``) in a temporary nnU-Net folder. It
writes ``--cases`` test images (copies of 8 phantom test cases under new names), runs ``nnunet-mtl predict``
in a child process and samples the child's resident memory (VmRSS) every ``--every`` finished cases (counted
by the records ``predict`` writes after each mask) and at the end.

    python benchmarks/predict_soak.py [--model-dir DIR] [--cases 1000] [--every 50] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPE = (24, 32, 32)  # tests/conftest.py's small phantom
DATASET_ID = 61
SAMPLE_SECONDS = 0.1


def rss_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kib = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")]
    return kib[0] / 1024 if kib else None  # none once it has exited


def train_smoke_model(root: Path) -> Path:
    """The tests' smoke model, trained in ``root`` (nnU-Net's folders set there before nnU-Net is imported)."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = str(root / name)
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor

    from nnunet_mtl.cli import main as cli
    from nnunet_mtl.data.phantom import PhantomSpec, generate_phantom
    from nnunet_mtl.training.planning import ensure_planned
    from nnunet_mtl.training.run import trainer_folder

    phantom = generate_phantom(
        root / "phantom", PhantomSpec(seed=7, train=(2, 2, 2), validation=(1, 1, 1), shape=SHAPE)
    )
    assert cli(["prepare", str(phantom), "--dataset-id", str(DATASET_ID)]) == 0
    extractor_init = DatasetFingerprintExtractor.__init__

    def fewer_samples(self, *args, **kwargs):  # as tests/conftest.py: 10^6 intensity samples, not 10^8
        extractor_init(self, *args, **kwargs)
        self.num_foreground_voxels_for_intensitystats = 10**6

    DatasetFingerprintExtractor.__init__ = fewer_samples
    name, plans = ensure_planned(DATASET_ID, "tiny", num_processes=1, log=lambda *_: None)
    trainer = "nnUNetTrainerMultitaskSmoke"
    env = {
        **os.environ,
        "nnUNet_extTrainer": os.pathsep.join([str(trainer_folder()), str(REPO / "tests/training/ext_trainers")]),
        "nnUNet_n_proc_DA": "1",
    }
    train = Path(sys.executable).with_name("nnUNetv2_train")
    command = [str(train), str(DATASET_ID), "3d_fullres", "0", "-tr", trainer, "-p", plans, "-device", "cpu"]
    subprocess.run([*command, "--val_best"], check=True, env=env, capture_output=True)
    return root / "nnUNet_results" / name / f"{trainer}__{plans}__3d_fullres"


def write_cases(folder: Path, num_cases: int, seed: int = 11) -> None:
    from nnunet_mtl.data.phantom import PhantomSpec, generate_phantom

    phantom = generate_phantom(
        folder.parent / "soak_phantom",
        PhantomSpec(seed=seed, train=(1, 1, 1), validation=(1, 1, 1), test=8, shape=SHAPE),
    )
    sources = sorted((phantom / "test").glob("*_0000.nii.gz"))
    folder.mkdir(parents=True)
    for i in range(num_cases):
        shutil.copyfile(sources[i % len(sources)], folder / f"soak_{i:05d}_0000.nii.gz")


def run_soak(model_dir: Path, images: Path, out: Path, num_cases: int, every: int) -> dict:
    command = [sys.executable, "-m", "nnunet_mtl", "predict", "--model-dir", str(model_dir)]
    command += ["-i", str(images), "-o", str(out)]
    records = out / ".nnunet-mtl"
    samples, peak = [], 0.0
    start = time.perf_counter()
    with open(out.parent / "predict_console.txt", "w") as console:
        child = subprocess.Popen(command, stdout=console, stderr=subprocess.STDOUT)
        next_mark = every
        while child.poll() is None:
            rss = rss_mib(child.pid)
            peak = max(peak, rss or 0.0)
            done = sum(1 for _ in records.glob("soak_*.json")) if records.is_dir() else 0
            if done >= next_mark and rss is not None:
                samples.append({"cases": done, "seconds": time.perf_counter() - start, "rss_mib": round(rss, 1)})
                next_mark += every
            time.sleep(SAMPLE_SECONDS)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"predict failed ({child.returncode}): see {out.parent / 'predict_console.txt'}")
    stages = [json.loads(p.read_text())["seconds"] for p in sorted(records.glob("soak_*.json"))]
    window = max(1, min(every, len(stages)))

    def mean_seconds(part: list[dict]) -> dict:
        return {k: round(sum(s[k] for s in part) / len(part), 4) for k in ("read", "preprocess", "forward", "export")}

    intervals = [(b["seconds"] - a["seconds"]) / (b["cases"] - a["cases"]) for a, b in itertools.pairwise(samples)]
    return {
        "cases": num_cases,
        "shape_zyx_median": list(SHAPE),
        "wall_seconds": round(wall, 1),
        "peak_rss_mib": round(peak, 1),
        "samples": samples,
        "seconds_per_case_between_samples": [round(s, 4) for s in intervals],
        "stage_seconds_first_cases": mean_seconds(stages[:window]),
        "stage_seconds_last_cases": mean_seconds(stages[-window:]),
        "csv_rows": len((out / "subtype_results.csv").read_text().splitlines()) - 1,
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "cpus": os.cpu_count(),
    }


def markdown(result: dict) -> str:
    lines = ["| cases done | s since start | RSS MiB | s per case since last sample |", "|---|---|---|---|"]
    intervals = ["", *result["seconds_per_case_between_samples"]]
    for sample, interval in zip(result["samples"], intervals):
        lines.append(f"| {sample['cases']} | {sample['seconds']:.1f} | {sample['rss_mib']:.1f} | {interval} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="default: train the tests' smoke model first")
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, help="keep the model, images and predictions here (default: temporary)")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        root = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nnunet-mtl-soak-")))
        root.mkdir(parents=True, exist_ok=True)
        model_dir = args.model_dir
        if model_dir is None:
            started = time.perf_counter()
            model_dir = train_smoke_model(root / "nnunet")
            print(f"trained the smoke model in {time.perf_counter() - started:.0f} s", flush=True)
        write_cases(root / "images", args.cases)
        (root / "work").mkdir()
        result = run_soak(model_dir, root / "images", root / "work" / "pred", args.cases, args.every)
        with contextlib.suppress(OSError):
            result["console_tail"] = (root / "work" / "predict_console.txt").read_text()[-400:]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "predict_soak.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "predict_soak.md").write_text(markdown(result))
    print(markdown(result))
    print({k: v for k, v in result.items() if k not in ("samples", "seconds_per_case_between_samples")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
