"""Autocast precision by what the device does fast: fp16 on CUDA (nnU-Net's), bf16 on CPUs with bf16 units.

A CPU without bf16 units emulates bf16 arithmetic: on one such machine (AVX2) bf16 autocast measured about
100x slower than fp32 for the same masks; on one with AVX-512 BF16, 1.9x faster. So ``auto`` asks the CPU
(``torch.cpu``'s capability checks: AVX-512 BF16 or AMX tiles) instead of assuming either.
"""

from __future__ import annotations

import contextlib

import torch

from nnunet_mtl.config import Precision

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_bf16_units() -> bool:
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: Precision, device: torch.device) -> str:
    """``auto``: fp16 on CUDA, bf16 on a CPU with bf16 units, else fp32; anything else as given."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "fp16"
    return "bf16" if cpu_has_bf16_units() else "fp32"


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])
