"""The GPU check: default-plan training steps and inference on one GPU, in one run of at most 8 minutes.

1. **Training steps** with nnU-Net's settings on CUDA (fp16 autocast with a gradient scaler, gradient
   clipping at 12, SGD, deep supervision, ``torch.compile`` as nnU-Net's ``initialize`` applies it): stock
   nnU-Net's step (the plan's network and its region loss) against the multitask step (the same network
   with the subtype head, ``training/step.py``: the trainer's own functions), on the same synthetic batch of
   the plan's patch and batch size. Seconds per step (median after the compile warm-up), the compile time,
   peak allocated and reserved CUDA memory.
2. **Inference** at the real data's median size (64x119x179 voxels after preprocessing): stock's tiles
   (nnU-Net's Gaussian sliding window, step 0.5, 8 mirrored passes per tile: ``benchmark``'s row (a'),
   whose masks equal stock nnU-Net's predictor's, tested on the CPU) against ``predict``'s default (c), the
   forward only (reading, preprocessing and export are CPU work, the same for both: ``real_size.py``).
3. **Memory estimate**: ``torch.cuda.max_memory_reserved`` of a whole-volume pass at the median and at
   the largest real size (98x272x459 after resampling to 2 mm) against the predictor's estimate.

It needs torch, numpy, scipy and nnU-Net's pure-Python packages (``nnunetv2``, ``dynamic_network_architectures``,
``acvl_utils``, ``batchgenerators``), not nnU-Net's image stack (SimpleITK, nibabel): the data are
synthetic tensors, so the check runs on a GPU machine where only PyTorch is installed, with those packages
on ``PYTHONPATH``. The plan is an nnU-Net plans file: ``benchmarks/results/real_size_plans/`` holds nnU-Net's
``default`` and ``resenc-m`` plans for the real-size phantom (written by ``real_size.py``).

    python benchmarks/gpu_check.py [--plans benchmarks/results/real_size_plans/nnUNetPlans.json]
        [--device cuda] [--steps 20] [--no-compile] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

MEDIAN_SHAPE = (64, 119, 179)
LARGEST_SHAPE = (98, 272, 459)  # 244x272x459 at 0.8 mm slices, resampled to the plan's 2.0 mm
DEFAULT_PLANS = Path(__file__).parent / "results" / "real_size_plans" / "nnUNetPlans.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def configuration(plans_file: Path, name: str = "3d_fullres") -> SimpleNamespace:
    """What the check needs of an nnU-Net plans configuration, without nnU-Net's plans handler (which
    imports the image stack)."""
    config = json.loads(Path(plans_file).read_text())["configurations"][name]
    architecture = config["architecture"]
    return SimpleNamespace(
        network_arch_class_name=architecture["network_class_name"],
        network_arch_init_kwargs=architecture["arch_kwargs"],
        network_arch_init_kwargs_req_import=architecture["_kw_requires_import"],
        pool_op_kernel_sizes=architecture["arch_kwargs"]["strides"],
        patch_size=config["patch_size"],
        batch_size=config["batch_size"],
        batch_dice=config.get("batch_dice", True),
    )


def build_networks(manager, device: torch.device):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from nnunet_mtl.config import DEFAULT
    from nnunet_mtl.model.multitask import build_multitask_network

    torch.manual_seed(0)
    plain = get_network_from_plans(
        manager.network_arch_class_name,
        manager.network_arch_init_kwargs,
        manager.network_arch_init_kwargs_req_import,
        1,
        2,  # the region channels: whole pancreas, lesion
        allow_init=True,
        deep_supervision=True,
    )
    multitask = build_multitask_network(manager, 1, 2, DEFAULT, deep_supervision=True)
    multitask.unet.load_state_dict(plain.state_dict())
    return plain.to(device), multitask.to(device)


def region_loss(manager):
    """nnU-Net's loss for region labels under deep supervision (nnUNetTrainer._build_loss)."""
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    loss = DC_and_BCE_loss(
        {},
        {"batch_dice": manager.batch_dice, "do_bg": True, "smooth": 1e-5, "ddp": False},
        use_ignore_label=False,
        dice_class=MemoryEfficientSoftDiceLoss,
    )
    weights = np.array([1 / (2**i) for i in range(len(manager.pool_op_kernel_sizes) - 1)])
    return DeepSupervisionWrapper(loss, weights / weights.sum())


def synthetic_batch(manager, device: torch.device):
    """A patch-sized batch with a gland and a lesion, region targets at every deep-supervision scale."""
    patch, batch = [int(p) for p in manager.patch_size], int(manager.batch_size)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, p) for p in patch], indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    labels = np.where(radius < 0.6, 1, 0) + (np.sqrt(((grid - 0.2) ** 2).sum(0)) < 0.25)
    labels = torch.from_numpy(np.where(radius < 0.6, labels, 0)).to(torch.uint8)
    rng = torch.Generator().manual_seed(0)
    data = torch.randn((batch, 1, *patch), generator=rng) + labels.float()[None, None]
    scales = np.cumprod(np.vstack(manager.pool_op_kernel_sizes), axis=0)[:-1]
    targets = []
    for scale in scales:
        small = labels[tuple(slice(None, None, int(s)) for s in scale)]
        regions = torch.stack([small > 0, small == 2]).float()
        targets.append(regions[None].repeat(batch, 1, 1, 1, 1).to(device))
    subtypes = torch.arange(batch) % 3
    return data.to(device), targets, subtypes.to(device)


def plain_step(network, loss, optimizer, scaler, precision, data, targets) -> None:
    """nnUNetTrainer.train_step."""
    from nnunet_mtl.precision import autocast

    optimizer.zero_grad(set_to_none=True)
    with autocast(precision, data.device):
        total = loss(network(data), targets)
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
        scaler.step(optimizer)
        scaler.update()
    else:
        total.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
        optimizer.step()


def multitask_step(network, head, loss, optimizer, scaler, precision, data, targets, subtypes) -> None:
    """nnUNetTrainerMultitask.train_step in the joint phase (training/step.py)."""
    from nnunet_mtl.config import DEFAULT
    from nnunet_mtl.model.multitask import reference_structure_maps
    from nnunet_mtl.training.step import multitask_losses, optimise

    weight = DEFAULT.loss.phase2_cls_weight
    optimizer.zero_grad(set_to_none=True)
    maps = reference_structure_maps(targets[0], True, 2)
    weights = torch.ones(3, device=data.device)
    losses = multitask_losses(network, loss, data, targets, subtypes, weights, weight, precision, False, maps)
    optimise(losses.total, network, head, optimizer, scaler, DEFAULT.loss.grad_clip_norm, weight)


def time_training(manager, device: torch.device, steps: int, compile_network: bool) -> dict:
    from nnunet_mtl.config import DEFAULT
    from nnunet_mtl.precision import resolve_precision
    from nnunet_mtl.training.optimizer import build_optimizer

    precision = resolve_precision("auto", device)
    plain, multitask = build_networks(manager, device)
    loss = region_loss(manager)
    data, targets, subtypes = synthetic_batch(manager, device)
    sgd = dict(lr=1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
    plain_optimizer = torch.optim.SGD(plain.parameters(), **sgd)
    multitask_optimizer, _ = build_optimizer(multitask, multitask.head, DEFAULT, 3e-5, 1000)
    head = multitask.head
    if compile_network:
        plain, multitask = torch.compile(plain), torch.compile(multitask)
    scalers = {k: torch.amp.GradScaler("cuda") if device.type == "cuda" else None for k in ("plain", "multitask")}
    run = {
        "plain": lambda: plain_step(plain, loss, plain_optimizer, scalers["plain"], precision, data, targets),
        "multitask": lambda: multitask_step(
            multitask, head, loss, multitask_optimizer, scalers["multitask"], precision, data, targets, subtypes
        ),
    }
    results = {}
    for key, step in run.items():
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        _sync(device)
        start = time.perf_counter()
        step()  # with compile: the compilation
        _sync(device)
        results[key] = {"first_step_s": time.perf_counter() - start}
        step()
    times = {k: [] for k in run}
    for _ in range(steps):  # interleaved: the machine's noise hits both alike
        for key, step in run.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times[key].append(time.perf_counter() - start)
    for key in run:
        results[key]["s_per_step"] = statistics.median(times[key])
        results[key]["ratio_to_plain"] = statistics.median(times[key]) / statistics.median(times["plain"])
    if device.type == "cuda":  # the peak over both (the last reset was before the multitask warm-up)
        results["multitask"]["peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        results["multitask"]["peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    return {"precision": precision, "compiled": compile_network, "trainers": results}


def time_inference(manager, device: torch.device, repeats: int, largest: bool) -> dict:
    from nnunet_mtl.config import InferenceConfig
    from nnunet_mtl.inference.engine import InferenceEngine
    from nnunet_mtl.inference.forward import estimated_forward_bytes, whole_volume_shape

    _, multitask = build_networks(manager, device)
    multitask.unet.decoder.deep_supervision = False
    multitask.eval()
    config = InferenceConfig(memory_budget_gb=1e6)  # the memory row measures the whole-volume pass at any size
    features = int(manager.network_arch_init_kwargs["features_per_stage"][0])
    engines = {
        "stock_tiles": InferenceEngine([multitask], manager, device, config, mirror_axes=(0, 1, 2), path="sliding"),
        "predict_default": InferenceEngine([multitask], manager, device),
    }
    data = torch.randn((1, *MEDIAN_SHAPE), generator=torch.Generator().manual_seed(1))
    results = {}
    for key, engine in engines.items():
        engine.forward(data)  # warm-up (cuDNN autotuning of the tiles)
        seconds = []
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            prediction = engine.forward(data)
            _sync(device)
            seconds.append(time.perf_counter() - start)
        results[key] = {"s_per_case": statistics.median(seconds), "path": prediction.path}
        results[key]["passes"] = prediction.num_forward_passes
    results["speedup"] = results["stock_tiles"]["s_per_case"] / results["predict_default"]["s_per_case"]
    memory = []
    shapes = [MEDIAN_SHAPE, LARGEST_SHAPE] if largest else [MEDIAN_SHAPE]
    whole = InferenceEngine([multitask], manager, device, config, path="whole")
    for shape in shapes:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        whole.forward(torch.randn((1, *shape)))
        padded = whole_volume_shape(shape, manager.pool_op_kernel_sizes, manager.patch_size)
        row = {"shape": list(shape), "estimate_mib": estimated_forward_bytes(padded, features) / 2**20}
        if device.type == "cuda":
            row["max_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
            row["max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        memory.append(row)
    return {"median_case": results, "memory": memory, "precision": engines["predict_default"].precision}


def markdown(result: dict) -> str:
    training, inference = result["training"], result["inference"]
    lines = [
        f"GPU check: {result['device_name']}, plan {result['plans']} (patch {result['patch_size']}, batch "
        f"{result['batch_size']}), {training['precision']}, compile {'on' if training['compiled'] else 'off'}",
        "",
        "| training step | s/step | ratio to plain | first step (compile) s | peak allocated / reserved MiB |",
        "|---|---|---|---|---|",
    ]
    for key, row in training["trainers"].items():
        peak = "-"
        if "peak_reserved_mib" in row:
            peak = f"{row['peak_allocated_mib']:.0f} / {row['peak_reserved_mib']:.0f}"
        lines.append(
            f"| {key} | {row['s_per_step']:.3f} | {row['ratio_to_plain']:.3f} | {row['first_step_s']:.1f} | {peak} |"
        )
    case = inference["median_case"]
    lines += [
        "",
        "| inference at 64x119x179 (forward) | s/case | path | passes |",
        "|---|---|---|---|",
        *(
            f"| {key} | {case[key]['s_per_case']:.3f} | {case[key]['path']} | {case[key]['passes']} |"
            for key in ("stock_tiles", "predict_default")
        ),
        "",
        f"predict's default is {case['speedup']:.1f}x faster than stock's tiles and flips.",
        "",
        "| whole-volume pass | estimate MiB | max reserved MiB | max allocated MiB |",
        "|---|---|---|---|",
    ]
    for row in inference["memory"]:
        reserved = "- | -"
        if "max_reserved_mib" in row:
            reserved = f"{row['max_reserved_mib']:.0f} | {row['max_allocated_mib']:.0f}"
        lines.append(f"| {'x'.join(map(str, row['shape']))} | {row['estimate_mib']:.0f} | {reserved} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", type=Path, default=DEFAULT_PLANS)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="timed inference runs per path")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-largest", action="store_true", help="leave out the largest-size memory row")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device", file=sys.stderr)
        return 2
    manager = configuration(args.plans)
    start = time.perf_counter()
    result = {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "plans": args.plans.name,
        "patch_size": manager.patch_size,
        "batch_size": manager.batch_size,
        "training": time_training(manager, device, args.steps, not args.no_compile),
        "inference": time_inference(manager, device, args.repeats, not args.no_largest),
    }
    result["seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_check_{device.type}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / f"{stem}.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
