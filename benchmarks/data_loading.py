"""Training steps per second on a CPU with nnU-Net's data-augmentation workers against batches made in the
training process (``ScheduleConfig.cpu_data_loader_processes``), in one run.

One ``tiny`` trainer on a phantom of the chosen size; each round makes the loaders both ways in turn, warms
each up, and times ``--steps`` steps of "next batch, then the training step" (what an epoch does), so machine
noise hits both sides alike. The worker loaders are shut down before the in-process side is timed: idle
workers and their polling thread would otherwise share the cores with it. Reports the median seconds per
step over the rounds and the ratio.

    python benchmarks/data_loading.py [--shape 32,48,48] [--workers N] [--rounds 5] [--steps 20] [--out DIR]

``--workers``: the worker count of the other side (default nnU-Net's own, ``get_allowed_n_proc_DA``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import make_dataset, write_outputs


def make_trainer(root: Path, shape: tuple[int, ...]):
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed

    from nnunet_mtl.training.trainer import nnUNetTrainerMultitaskTiny

    name, plans_identifier = make_dataset(root, "tiny", shape)
    folder = Path(nnUNet_preprocessed.get()) / name
    plans = {**load_json(folder / f"{plans_identifier}.json"), "continue_training": False}
    dataset_json = load_json(folder / "dataset.json")
    trainer = nnUNetTrainerMultitaskTiny(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))
    trainer.initialize()
    trainer.class_weights = trainer.compute_class_weights()
    trainer.current_epoch = trainer.mtl_config.loss.phase1_epochs  # joint phase: the full cost
    return trainer


def seconds_per_step(trainer, workers: int, steps: int, warmup: int = 3) -> float:
    """Mean seconds of "next batch, then the training step" over ``steps``, with loaders made with ``workers``
    augmentation workers (0: in the training process)."""
    from nnunet_mtl.environment import environment_variable
    from nnunet_mtl.training.trainer import DATA_LOADER_PROCESSES_VARIABLE

    with environment_variable(DATA_LOADER_PROCESSES_VARIABLE, str(workers)):
        train, val = trainer.get_dataloaders()
    try:
        for _ in range(warmup):
            trainer.train_step(next(train))
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(next(train))
        return (time.perf_counter() - start) / steps
    finally:
        for loader in (train, val):
            getattr(loader, "_finish", lambda: None)()  # the single-threaded loader has no workers to end


def main(argv=None) -> int:
    from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="32,48,48", help="the phantom's median case, z,y,x voxels")
    parser.add_argument("--workers", type=int, default=None, help="the other side's workers (nnU-Net's count)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per side and round")
    parser.add_argument("--out", type=Path, default=Path("benchmark_results"))
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    workers = get_allowed_n_proc_DA() if args.workers is None else args.workers
    torch.set_num_threads(os.cpu_count() or 1)
    sides = {f"{workers} workers": workers, "in the training process": 0}
    times: dict[str, list[float]] = {k: [] for k in sides}
    with tempfile.TemporaryDirectory(prefix="nnunet-mtl-bench-") as tmp:
        trainer = make_trainer(Path(tmp), shape)
        for _ in range(args.rounds):
            for side, count in sides.items():
                times[side].append(seconds_per_step(trainer, count, args.steps))
    medians = {k: statistics.median(v) for k, v in times.items()}
    reference = medians[f"{workers} workers"]
    result = {
        "shape": list(shape),
        "patch_size": list(trainer.configuration_manager.patch_size),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "precision": trainer.precision,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "sides": {
            k: {"median_s_per_step": medians[k], "per_round": times[k], "speed_to_workers": reference / medians[k]}
            for k in sides
        },
    }
    lines = [
        f"Batch then training step, tiny plan (phantom {args.shape}, patch {result['patch_size']}), "
        f"{result['cpu_count']} CPUs, {trainer.precision}, median of {args.rounds} rounds x {args.steps} steps",
        "",
        "| data loading | s/step | steps per second, relative |",
        "|---|---|---|",
        *(f"| {k} | {r['median_s_per_step']:.3f} | {r['speed_to_workers']:.2f}x |" for k, r in result["sides"].items()),
    ]
    write_outputs(args.out, f"data_loading_{'x'.join(map(str, shape))}", result, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
