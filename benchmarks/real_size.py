"""The GPU presets' plans at the real data's sizes, on a CPU: training steps, validation, predict (a) vs (c).

For the ``default`` and ``resenc-m`` presets, on a phantom of the real data's median size (64x119x179 voxels
at about 2.2x0.75x0.75 mm; nnU-Net plans it as it would the real data):

1. **Training**: a few steps of ``nnUNetTrainerMultitask`` on nnU-Net's own loader (seconds per step, in the
   joint phase), then one whole-volume validation of the validation cases (seconds, path).
2. **The weights** of those steps are saved as the fold's checkpoints (timing needs no trained weights).
3. **One median-size case** predicted by stock nnU-Net's predictor (a) (its own read, preprocessing, 8
   mirrored passes per tile and export, timed stage by stage) and by ``nnunet-mtl predict`` (c), each in a
   fresh process: seconds per case with the breakdown (read, preprocess, forward, export), peak resident
   memory.
4. **The largest real size** (244x272x459 voxels at 0.8x0.73x0.73 mm) through (c) in a fresh process: path,
   seconds, peak resident memory against the predictor's estimate for the pass it ran.

    python benchmarks/real_size.py [--presets default resenc-m] [--steps 3] [--out benchmarks/results]
        [--work DIR] [--memory-budget-gb 6] [--precision fp32|auto]

Each fresh process runs alone; the machine should be otherwise idle. On 2 CPU cores the two presets take
about half an hour.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

DATASET_ID = 991
MEDIAN_SHAPE = (64, 119, 179)


def _fresh(function, *args):
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _peak_rss_mib() -> float:
    """This process's own peak resident memory (VmHWM). Not ``ru_maxrss``: Linux carries a spawning parent's
    peak into the child through fork and exec (the largest case's 3 GB phantom showed up as the child's)."""
    return _status_mib("VmHWM")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current resident memory (Linux's clear_refs); False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def make_phantom(work: Path) -> Path:
    from nnunet_mtl.data.phantom import PhantomSpec, generate_phantom
    from nnunet_mtl.data.prepare import prepare_dataset

    phantom = work / "phantom"
    if not (phantom / "phantom.json").is_file():
        spec = PhantomSpec(train=(2, 2, 2), validation=(1, 1, 0), test=1, shape=MEDIAN_SHAPE)
        generate_phantom(phantom, spec)
    prepare_dataset(phantom, DATASET_ID)
    return phantom


def train_and_validate(preset: str, steps: int) -> dict:
    """In a fresh process: a few training steps and one whole-volume validation; saves the checkpoints."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed

    from nnunet_mtl.config import PRESETS
    from nnunet_mtl.training.planning import ensure_planned
    from nnunet_mtl.training.trainer import nnUNetTrainerMultitask

    torch.set_num_threads(os.cpu_count() or 1)
    name, plans_identifier = ensure_planned(DATASET_ID, preset, num_processes=2, log=lambda *_: None)
    # after planning: nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which rejects 0
    os.environ.setdefault("nnUNet_n_proc_DA", "0")  # no augmentation workers
    folder = Path(nnUNet_preprocessed.get()) / name
    plans = load_json(folder / f"{plans_identifier}.json")
    plans["continue_training"] = False  # nnU-Net 2.8's trainer pops it (run_training.get_trainer_from_args sets it)
    trainer = nnUNetTrainerMultitask(
        plans, "3d_fullres", 0, load_json(folder / "dataset.json"), device=torch.device("cpu")
    )
    assert PRESETS[preset].trainer == type(trainer).__name__
    trainer.on_train_start()  # nnU-Net's: loaders, plans.json and dataset.json in the model folder
    trainer.current_epoch = trainer.mtl_config.loss.phase1_epochs  # the joint phase: the full step
    trainer.on_train_epoch_start()
    seconds = []
    for _ in range(steps + 1):  # the first step warms up
        batch = next(trainer.dataloader_train)
        start = time.perf_counter()
        trainer.train_step(batch)
        seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    metrics = trainer.whole_volume_validation()
    validation_seconds = time.perf_counter() - start
    for checkpoint in ("checkpoint_best.pth", "checkpoint_final.pth"):
        trainer.save_checkpoint(str(Path(trainer.output_folder) / checkpoint))
    manager = trainer.configuration_manager
    result = {
        "preset": preset,
        "patch_size": [int(p) for p in manager.patch_size],
        "spacing": [float(s) for s in manager.spacing],
        "batch_size": int(manager.batch_size),
        "features_per_stage": list(manager.network_arch_init_kwargs["features_per_stage"]),
        "precision": trainer.precision,
        "seconds_per_step": statistics.median(seconds[1:]),
        "validation_cases": len(metrics.cases),
        "validation_seconds": validation_seconds,
        "model_dir": str(Path(trainer.output_folder_base)),
        "plans_file": str(folder / f"{plans_identifier}.json"),
        "peak_rss_mib": _peak_rss_mib(),
    }
    _shutdown_loaders(trainer)
    return result


def _shutdown_loaders(trainer) -> None:
    for loader in (trainer.dataloader_train, trainer.dataloader_val):
        if hasattr(loader, "_finish"):
            loader._finish()


def stock_case(stock_dir: str, image: str, out: str) -> dict:
    """In a fresh process: stock nnU-Net's predictor on one case, stage by stage (its sequential path)."""
    from nnunetv2.inference.export_prediction import export_prediction_from_logits
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_mtl.model.checkpoint import weights_only_loads

    torch.set_num_threads(os.cpu_count() or 1)
    predictor = nnUNetPredictor(device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    with weights_only_loads():
        predictor.initialize_from_trained_model_folder(stock_dir, (0,), "checkpoint_best.pth")
    plans, config, dataset_json = predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json
    stages = {}
    start = time.perf_counter()
    data, properties = plans.image_reader_writer_class().read_images([image])
    stages["read"] = time.perf_counter() - start
    start = time.perf_counter()
    preprocessor = config.preprocessor_class(verbose=False)
    data, _, properties = preprocessor.run_case_npy(data, None, properties, plans, config, dataset_json)
    data = torch.from_numpy(data).contiguous().float()
    stages["preprocess"] = time.perf_counter() - start
    start = time.perf_counter()
    logits = predictor.predict_logits_from_preprocessed_data(data).cpu()
    stages["forward"] = time.perf_counter() - start
    start = time.perf_counter()
    export_prediction_from_logits(logits, properties, config, plans, dataset_json, out, False)
    stages["export"] = time.perf_counter() - start
    return {"stages": stages, "seconds": sum(stages.values()), "peak_rss_mib": _peak_rss_mib()}


def ours_case(model_dir: str, image: str, out: str, memory_budget_gb: float, precision: str) -> dict:
    """In a fresh process: ``nnunet-mtl predict``'s predictor on one case."""
    from nnunet_mtl.config import InferenceConfig
    from nnunet_mtl.data.layout import flat_image_case
    from nnunet_mtl.inference.forward import estimated_forward_bytes, whole_volume_shape
    from nnunet_mtl.inference.model import load_model
    from nnunet_mtl.inference.predictor import MultitaskPredictor

    torch.set_num_threads(os.cpu_count() or 1)
    model = load_model(Path(model_dir), (0,), ("best",))
    config = InferenceConfig(memory_budget_gb=memory_budget_gb, precision=precision)
    predictor = MultitaskPredictor(model, torch.device("cpu"), False, config, postprocess=False)
    case = flat_image_case(Path(image))
    baseline = _status_mib("VmRSS")  # the model loaded; the case's peak is measured from here
    peak_reset = _reset_peak_rss()
    start = time.perf_counter()
    result = predictor.predict_case(case, Path(out))
    seconds = time.perf_counter() - start
    pre = predictor.preprocess(case)  # again, for the shape the network saw (not timed)
    manager = model.configuration_manager
    shape = pre.data.shape[1:]
    padded = whole_volume_shape(shape, manager.pool_op_kernel_sizes, manager.patch_size)
    features = int(manager.network_arch_init_kwargs["features_per_stage"][0])
    estimate = estimated_forward_bytes(padded if result.path == "whole" else manager.patch_size, features)
    return {
        "stages": result.seconds,
        "seconds": seconds,
        "path": result.path,
        "forward_passes": result.forward_passes,
        "precision": predictor.precision,
        "network_input_shape": [int(s) for s in shape],
        "peak_rss_mib": _peak_rss_mib(),
        "baseline_rss_mib": baseline,
        "peak_reset": peak_reset,  # False: the peak includes the model loading before the case
        "estimate_mib": estimate / 2**20,
    }


def _geometry_kept(image: Path, mask: Path) -> bool:
    import SimpleITK as sitk

    a, b = sitk.ReadImage(str(image)), sitk.ReadImage(str(mask))
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing())
        and np.allclose(a.GetOrigin(), b.GetOrigin())
        and np.allclose(a.GetDirection(), b.GetDirection())
    )


def benchmark_preset(
    preset: str, phantom: Path, work: Path, steps: int, memory_budget_gb: float, precision: str, log
) -> dict:
    from nnunet_mtl.model.export import export_segmentation_model

    log(f"{preset}: {steps} training steps and a whole-volume validation")
    result = _fresh(train_and_validate, preset, steps)
    model_dir = Path(result["model_dir"])
    stock_dir = export_segmentation_model(model_dir, work / f"{preset}_stock", (0,), "checkpoint_best.pth")
    median = sorted((phantom / "test").glob("*_0000.nii.gz"))[0]
    out = work / f"{preset}_pred"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log(f"{preset}: stock nnU-Net (a) on {median.name}")
    result["median_stock"] = _fresh(stock_case, str(stock_dir), str(median), str(out / "stock_median"))
    log(f"{preset}: nnunet-mtl (c) on {median.name}")
    ours = (memory_budget_gb, precision)
    result["median_ours"] = _fresh(ours_case, str(model_dir), str(median), str(out / "ours"), *ours)
    result["speedup_c_over_a"] = result["median_stock"]["seconds"] / result["median_ours"]["seconds"]
    largest = _largest_case(work)
    log(f"{preset}: nnunet-mtl (c) on the largest real size")
    result["largest_ours"] = _fresh(ours_case, str(model_dir), str(largest), str(out / "ours"), *ours)
    result["largest_ours"]["geometry_kept"] = _geometry_kept(largest, out / "ours" / "quiz_900.nii.gz")
    return result


def _largest_case(work: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from large_volume import write_large_case

    folder = work / "largest"
    folder.mkdir(exist_ok=True)
    path = folder / "quiz_900_0000.nii.gz"
    return path if path.is_file() else write_large_case(folder)


def _stages(stages: dict) -> str:
    return " / ".join(f"{stages[k]:.1f}" for k in ("read", "preprocess", "forward", "export"))


def markdown(results: list[dict]) -> str:
    lines = [
        "| preset | patch / features | train s/step | validation (cases, s) | (a) s/case: read / preprocess / forward "
        "/ export | (c) s/case: read / preprocess / forward / export | (c) x faster | peak RSS MiB (a) / (c) | "
        "largest: path, s, peak RSS / estimate MiB, geometry |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        a, c, big = r["median_stock"], r["median_ours"], r["largest_ours"]
        patch = "x".join(map(str, r["patch_size"]))
        lines.append(
            f"| {r['preset']} | {patch} / {r['features_per_stage'][0]}-{r['features_per_stage'][-1]} | "
            f"{r['seconds_per_step']:.1f} | {r['validation_cases']}, {r['validation_seconds']:.0f} | "
            f"{a['seconds']:.1f}: {_stages(a['stages'])} | {c['seconds']:.1f}: {_stages(c['stages'])} | "
            f"{r['speedup_c_over_a']:.1f} | {a['peak_rss_mib']:.0f} / {c['peak_rss_mib']:.0f} | "
            f"{big['path']} ({big['forward_passes']} passes), {big['seconds']:.0f} s, "
            f"{big['peak_rss_mib'] - big['baseline_rss_mib']:.0f} above baseline / {big['estimate_mib']:.0f}, "
            f"{'kept' if big['geometry_kept'] else 'CHANGED'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", choices=["default", "resenc-m"], default=["default", "resenc-m"])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up step)")
    parser.add_argument("--memory-budget-gb", type=float, default=6.0, help="predict's budget (its default 6)")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "auto", "bf16"],
        help="ours (c): fp32, stock's on a CPU (default), or predict's own (auto: bf16 where the CPU has bf16 units)",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/nnunet-mtl-real-size"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    os.environ.update({n: str(args.work / n) for n in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    args.work.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(f"real_size: {message}", file=sys.stderr, flush=True)

    phantom = make_phantom(args.work)
    results = [
        benchmark_preset(p, phantom, args.work, args.steps, args.memory_budget_gb, args.precision, log)
        for p in args.presets
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    plans_out = args.out / "real_size_plans"  # the plans gpu_check.py runs on
    plans_out.mkdir(exist_ok=True)
    for result in results:
        shutil.copyfile(result["plans_file"], plans_out / Path(result["plans_file"]).name)
    table = markdown(results)
    (args.out / "real_size_cpu.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "real_size_cpu.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
