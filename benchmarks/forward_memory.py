"""Peak memory of one whole-volume inference forward pass, to calibrate the predictor's memory estimate.

For each architecture and volume size, a fresh process builds the multitask network, allocates the
input, notes its resident memory, runs one forward pass (no grad, fp32, as ``nnunet-mtl predict`` does
on a CPU) and reports the peak resident memory above that baseline, per voxel and per first-stage
feature. ``nnunet_mtl.inference.forward.BYTES_PER_VOXEL_PER_FEATURE`` must stay above the largest value.

    python benchmarks/forward_memory.py [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
COMMON = {
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]
STRIDES6 = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
KERNELS6 = [[1, 3, 3]] + [[3, 3, 3]] * 5
ARCHITECTURES = {
    # nnunet-mtl's tiny plan (on the phantom)
    "tiny": (
        PLAIN,
        {
            "n_stages": 4,
            "features_per_stage": [16, 32, 64, 128],
            "kernel_sizes": [[1, 3, 3]] + [[3, 3, 3]] * 3,
            "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
            "n_conv_per_stage": [2] * 4,
            "n_conv_per_stage_decoder": [2] * 3,
        },
    ),
    # nnU-Net's default 3d_fullres plan shape on the real data (6 stages, 32-320 features)
    "default": (
        PLAIN,
        {
            "n_stages": 6,
            "features_per_stage": [32, 64, 128, 256, 320, 320],
            "kernel_sizes": KERNELS6,
            "strides": STRIDES6,
            "n_conv_per_stage": [2] * 6,
            "n_conv_per_stage_decoder": [2] * 5,
        },
    ),
    # nnU-Net's ResEnc-M plan shape
    "resenc-m": (
        RESENC,
        {
            "n_stages": 6,
            "features_per_stage": [32, 64, 128, 256, 320, 320],
            "kernel_sizes": KERNELS6,
            "strides": STRIDES6,
            "n_blocks_per_stage": [1, 3, 4, 6, 6, 6],
            "n_conv_per_stage_decoder": [1] * 5,
        },
    ),
}
CASES = [
    ("tiny", (48, 64, 64)),
    ("tiny", (64, 128, 128)),
    ("tiny", (96, 192, 192)),
    ("default", (32, 64, 96)),
    ("default", (64, 128, 192)),
    ("resenc-m", (64, 128, 192)),
]


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(architecture: str, shape: tuple[int, ...]) -> dict:
    import torch

    from nnunet_mtl.config import MultitaskConfig
    from nnunet_mtl.inference.forward import divisibility, estimated_forward_bytes, predict_whole_volume
    from nnunet_mtl.model.multitask import build_multitask_network

    torch.set_num_threads(os.cpu_count() or 1)
    class_name, kwargs = ARCHITECTURES[architecture]
    manager = SimpleNamespace(
        network_arch_class_name=class_name,
        network_arch_init_kwargs={**COMMON, **kwargs},
        network_arch_init_kwargs_req_import=REQUIRES_IMPORT,
    )
    network = build_multitask_network(manager, 1, 2, MultitaskConfig(), deep_supervision=False).eval()
    data = torch.randn(1, *shape)
    features = kwargs["features_per_stage"][0]
    assert all(s % d == 0 for s, d in zip(shape, divisibility(kwargs["strides"])))
    baseline = current_rss_bytes()
    start = time.perf_counter()
    predict_whole_volume(network, data, kwargs["strides"])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    voxels = int(torch.tensor(shape).prod())
    return {
        "architecture": architecture,
        "shape": list(shape),
        "first_stage_features": features,
        "forward_seconds": seconds,
        "peak_above_baseline_mib": (peak - baseline) / 2**20,
        "bytes_per_voxel_per_feature": (peak - baseline) / voxels / features,
        "estimate_mib": estimated_forward_bytes(shape, features) / 2**20,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmark_results"))
    parser.add_argument("--one", nargs=4, metavar=("ARCH", "Z", "Y", "X"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], tuple(int(v) for v in args.one[1:]))))
        return 0
    rows = []
    for architecture, shape in CASES:
        out = subprocess.run(
            [sys.executable, __file__, "--one", architecture, *map(str, shape)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr)
    lines = [
        "| network | volume | first-stage features | forward s | peak above baseline MiB | "
        "bytes/voxel/feature | estimate MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['architecture']} | {'x'.join(map(str, r['shape']))} | {r['first_stage_features']} | "
            f"{r['forward_seconds']:.1f} | {r['peak_above_baseline_mib']:.0f} | "
            f"{r['bytes_per_voxel_per_feature']:.1f} | {r['estimate_mib']:.0f} |"
        )
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "forward_memory_cpu.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "forward_memory_cpu.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
