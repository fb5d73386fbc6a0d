"""DDP logic of ours, checked with two gloo processes on the CPU (nnU-Net's DDP itself needs NCCL/CUDA)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from nnunet_mtl.config import MultitaskConfig
from nnunet_mtl.training.distributed import gather_objects, inverse_frequency_weights, weighted_cross_entropy
from nnunet_mtl.training.validation import ValidatedCase, summarize, validate_all_ranks

WORLD = 2
FEATURES = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
TARGETS = torch.tensor([0, 0, 1, 2, 2, 1, 2])
SHARDS = [slice(0, 2), slice(2, 7)]  # unequal batches with different class mixes
WEIGHTS = torch.tensor([0.5, 1.0, 2.0])
CASES = [
    ValidatedCase(f"case_{i}", {"whole_pancreas": 0.9 - 0.05 * i, "lesion": 0.5 + 0.04 * i}, t, p, [1.0, 0.0, 0.0])
    for i, (t, p) in enumerate([(0, 0), (1, 2), (2, 2), (1, 1), (0, 1), (2, 2)])
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 3)
    model = DistributedDataParallel(layer)
    loss = weighted_cross_entropy(model(FEATURES[SHARDS[rank]]), TARGETS[SHARDS[rank]], WEIGHTS)
    loss.backward()
    losses = gather_objects([float(loss)])
    metrics = validate_all_ranks(CASES[rank::WORLD], MultitaskConfig())
    results[rank] = {
        "grad": layer.weight.grad.clone(),
        "mean_loss": sum(losses) / len(losses),
        "order": gather_objects([rank, rank]),
        "metrics": (metrics.dice_whole, metrics.dice_lesion, metrics.macro_f1, metrics.combined),
    }
    dist.destroy_process_group()


@pytest.mark.slow
def test_weighted_loss_gradient_and_metrics_match_single_process():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(_free_port(), results), nprocs=WORLD, join=True)

    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 3)
    reference = F.cross_entropy(layer(FEATURES), TARGETS, weight=WEIGHTS)
    reference.backward()
    expected = summarize(sorted(CASES, key=lambda c: c.name), MultitaskConfig())
    for rank in range(WORLD):
        assert torch.allclose(results[rank]["grad"], layer.weight.grad, atol=1e-6)
        assert abs(results[rank]["mean_loss"] - reference.item()) < 1e-6
        assert results[rank]["order"] == [0, 0, 1, 1]
        assert results[rank]["metrics"] == (
            expected.dice_whole,
            expected.dice_lesion,
            expected.macro_f1,
            expected.combined,
        )


def test_single_process_fallbacks():
    assert gather_objects([1, 2]) == [1, 2]
    logits = torch.randn(4, 3)
    targets = torch.tensor([0, 1, 2, 2])
    assert torch.allclose(
        weighted_cross_entropy(logits, targets, WEIGHTS), F.cross_entropy(logits, targets, weight=WEIGHTS)
    )


def test_inverse_frequency_weights():
    weights = inverse_frequency_weights([10, 30, 0], smoothing=1.0)
    assert weights[0] > weights[1]  # the rarer class weighs more
    assert torch.isfinite(weights).all()  # an absent class does not divide by zero
    counts = torch.tensor([10.0, 30.0, 0.0])
    assert float((weights * counts).sum() / counts.sum()) == pytest.approx(1.0)
    ratio = float(weights[0] / weights[1])
    assert ratio == pytest.approx(31 / 11)


_HANGING_RANK = """
import os, socket, threading
import torch.distributed as dist
from nnunet_mtl.training.distributed import end_rank_on_error
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
dist.init_process_group("gloo", rank=0, world_size=1)
threading.Thread(target=threading.Event().wait).start()  # a thread that never ends: shutdown would hang
with end_rank_on_error(grace_seconds=1.0):
    raise RuntimeError("rank failure")
"""


def test_a_failing_rank_ends_even_when_its_shutdown_hangs():
    import subprocess
    import sys
    import time

    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", _HANGING_RANK], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "rank 0: RuntimeError: rank failure (ending this rank)" in result.stderr
    assert time.monotonic() - start < 60
