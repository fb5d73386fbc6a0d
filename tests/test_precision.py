"""Precision by capability: asked of the CPU at run time, never assumed."""

import pytest
import torch

from nnunet_mtl import precision
from nnunet_mtl.precision import autocast, resolve_precision


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"), [(False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16")]
)
def test_cpu_precision_follows_the_cpus_bf16_units(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"  # an explicit choice wins
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"


def test_this_machine_is_asked(monkeypatch):
    assert precision.cpu_has_bf16_units() == (
        torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    )


def test_autocast_runs_matmuls_in_the_chosen_dtype():
    x = torch.randn(4, 4)
    with autocast("bf16", torch.device("cpu")):
        assert (x @ x).dtype == torch.bfloat16
    with autocast("fp32", torch.device("cpu")):
        assert (x @ x).dtype == torch.float32
