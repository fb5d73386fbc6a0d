"""nnU-Net's own DDP runner (``run_ddp``) with 2 gloo processes on the CPU: the test patches nnU-Net's
NCCL process group, its CUDA device calls and its DDP wrapper's device ids, nothing in nnunet-mtl.

    python -m tests.training.ddp_gloo DATASET_ID PLANS TRAINER [WORLD]

Every rank appends the checkpoint files it writes to ``checkpoint_writes_rank<R>.txt`` in the output folder.
"""

from __future__ import annotations

import os
import socket
import sys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, dataset: str, plans: str, trainer: str, world: int) -> None:
    import nnunetv2.run.run_training as runner
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as stock
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import nnunet_mtl.training.trainer as ours

    torch.set_num_threads(1)
    runner.setup_ddp = lambda r, w: dist.init_process_group("gloo", rank=r, world_size=w)
    torch.cuda.set_device = lambda device: None
    stock.DDP = lambda module, device_ids=None, **kwargs: DistributedDataParallel(module, **kwargs)
    write = ours.save_checkpoint

    def recorded_write(checkpoint, path):
        with open(os.path.join(os.path.dirname(path), f"checkpoint_writes_rank{rank}.txt"), "a") as log:
            log.write(os.path.basename(path) + "\n")
        write(checkpoint, path)

    ours.save_checkpoint = recorded_write
    # run_ddp(rank, dataset, configuration, fold, trainer, plans, disable_checkpointing, continue, validation only,
    #         pretrained weights, npz, val_with_best, world size)
    runner.run_ddp(rank, dataset, "3d_fullres", 0, trainer, plans, False, False, False, None, False, True, world)


def main(argv: list[str]) -> None:
    import torch.multiprocessing as mp

    dataset, plans, trainer = argv[:3]
    world = int(argv[3]) if len(argv) > 3 else 2
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    mp.spawn(_rank, args=(dataset, plans, trainer, world), nprocs=world, join=True)


if __name__ == "__main__":
    main(sys.argv[1:])
