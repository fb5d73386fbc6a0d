"""Training-step cost of nnunet-mtl's multitask trainer against stock nnU-Net, in one run.

Three trainers on the same plan and the same batch, steps interleaved so machine noise hits all alike:

* ``plain``     - stock ``nnUNetTrainer`` (segmentation only);
* ``multitask`` - ``nnUNetTrainerMultitask`` (one encoder pass, classification head on the bottleneck);
* ``seed``      - the seed's forward for reference: the full network, then the encoder AGAIN for the head;
* ``multitask-fp32`` - where the multitask trainer's precision (``auto``: bf16 on a CPU with bf16 units, fp16
  on CUDA) is not fp32, the same trainer in fp32, for the precision choice measured in the same run.

Reports the median seconds per step, the ratio to ``plain`` and the memory a step needs: the bytes of
tensors saved for backward (exact, any device) and, on CUDA, the peak allocated memory.

    python benchmarks/train_step.py [--plans tiny|default] [--steps 12] [--device cpu|cuda] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def saved_tensor_bytes(step) -> int:
    """Bytes of activations autograd keeps for backward during ``step`` (deduplicated by storage)."""
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def make_dataset(root: Path, plans: str, shape: tuple[int, ...] = (32, 48, 48)) -> tuple[str, str]:
    """A 15-case phantom of median ``shape`` under ``root``, planned for ``plans``: (dataset name, plans id)."""
    os.environ.update({name: str(root / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    from nnunet_mtl.data.phantom import PhantomSpec, generate_phantom
    from nnunet_mtl.data.prepare import prepare_dataset
    from nnunet_mtl.training.planning import ensure_planned

    generate_phantom(root / "phantom", PhantomSpec(train=(4, 4, 4), validation=(1, 1, 1), test=0, shape=shape))
    prepare_dataset(root / "phantom", 990)
    return ensure_planned(990, "tiny" if plans == "tiny" else "default", num_processes=2, log=lambda *_: None)


def build_trainers(name: str, plans_identifier: str, device: torch.device):
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_mtl.training.trainer import nnUNetTrainerMultitask

    folder = Path(nnUNet_preprocessed.get()) / name
    dataset_json = load_json(folder / "dataset.json")

    def make(cls):
        plans = {**load_json(folder / f"{plans_identifier}.json"), "continue_training": False}
        trainer = cls(plans, "3d_fullres", 0, dataset_json, device=device)
        trainer.initialize()
        return trainer

    def make_multitask(precision: str | None = None):
        trainer = make(nnUNetTrainerMultitask)
        trainer.class_weights = trainer.compute_class_weights()
        trainer.current_epoch = trainer.mtl_config.loss.phase1_epochs  # joint phase: the full cost
        if precision is not None:
            trainer.precision = precision
        return trainer

    plain, multitask = make(nnUNetTrainer), make_multitask()
    fp32 = make_multitask("fp32") if multitask.precision != "fp32" else None
    return plain, multitask, fp32


def seed_style_step(trainer, batch):
    """The seed's forward: full network, then the encoder again for the classification head."""
    from nnunet_mtl.benchmark.seed_network import EncoderTwiceUNet
    from nnunet_mtl.precision import autocast

    network = EncoderTwiceUNet(trainer.multitask_network)
    data = batch["data"].to(trainer.device)
    target = [t.to(trainer.device) for t in batch["target"]]
    subtype = trainer.subtype_targets(batch["keys"]).to(trainer.device)
    trainer.optimizer.zero_grad(set_to_none=True)
    with autocast(trainer.precision, trainer.device):  # the multitask trainer's precision
        # the same head inputs as the multitask trainer's (pooling on the reference masks)
        output = network(data, reference_maps=trainer.reference_maps(target))
        loss = trainer.loss(output.segmentation, target) + 0.1 * torch.nn.functional.cross_entropy(
            output.class_logits.float(), subtype
        )
    loss.backward()
    trainer.optimizer.step()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", choices=["tiny", "default"], default="tiny")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per trainer (after 2 warm-up steps)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmark_results"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="nnunet-mtl-bench-") as tmp:
        name, plans_identifier = make_dataset(Path(tmp), args.plans)
        os.environ.setdefault("nnUNet_n_proc_DA", "0")  # one batch, no augmentation workers needed
        plain, multitask, fp32 = build_trainers(name, plans_identifier, device)
        loader, _ = multitask.get_dataloaders()
        batch = next(loader)
        steps = {
            "plain": lambda: plain.train_step(batch),
            "multitask": lambda: multitask.train_step(batch),
            "seed": lambda: seed_style_step(multitask, batch),
        }
        if fp32 is not None:
            steps["multitask-fp32"] = lambda: fp32.train_step(batch)
        memory = {k: saved_tensor_bytes(step) for k, step in steps.items()}
        cuda_peak = {}
        times = {k: [] for k in steps}
        for k, step in steps.items():  # warm-up (and CUDA peak memory per side)
            for _ in range(2):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
                cuda_peak[k] = torch.cuda.max_memory_allocated()
        for _ in range(args.steps):
            for k, step in steps.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[k].append(time.perf_counter() - start)

    config = multitask.configuration_manager
    result = {
        "plans": args.plans,
        "patch_size": list(config.patch_size),
        "batch_size": config.batch_size,
        "features_per_stage": config.network_arch_init_kwargs["features_per_stage"],
        "device": str(device),
        "threads": torch.get_num_threads(),
        "multitask_precision": multitask.precision,
        "steps": args.steps,
        "trainers": {
            k: {
                "median_s_per_step": statistics.median(v),
                "ratio_to_plain": statistics.median(v) / statistics.median(times["plain"]),
                "saved_activation_mib": memory[k] / 2**20,
                **({"cuda_peak_mib": cuda_peak[k] / 2**20} if cuda_peak else {}),
            }
            for k, v in times.items()
        },
    }
    lines = [
        f"Training step, {args.plans} plan (patch {result['patch_size']}, batch {result['batch_size']}, "
        f"features {result['features_per_stage']}), {device}, {result['threads']} threads, median of {args.steps}; "
        f"multitask in {multitask.precision}",
        "",
        "| trainer | s/step | ratio to plain | saved activations (MiB) |" + (" CUDA peak (MiB) |" if cuda_peak else ""),
        "|---|---|---|---|" + ("---|" if cuda_peak else ""),
    ]
    for k, r in result["trainers"].items():
        lines.append(
            f"| {k} | {r['median_s_per_step']:.3f} | {r['ratio_to_plain']:.3f} | "
            f"{r['saved_activation_mib']:.1f} |" + (f" {r['cuda_peak_mib']:.0f} |" if cuda_peak else "")
        )
    write_outputs(args.out, f"train_step_{args.plans}_{device.type}", result, "\n".join(lines))
    return 0


def write_outputs(out: Path, stem: str, result, table: str) -> None:
    """``OUT/STEM.json`` (the numbers) and ``OUT/STEM.md`` (the table), and the table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    sys.exit(main())
