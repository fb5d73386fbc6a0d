"""How often the training patches of a preset contain lesion: nnU-Net's sampling with region labels.

    python benchmarks/patch_sampling.py PHANTOM [--preset tiny] [--batches 100] [--work NNUNET_FOLDERS]
    PYTHONPATH=OTHER_CHECKOUT/src python benchmarks/patch_sampling.py ...   # another version's trainer and plan

Prepares and plans PHANTOM in a scratch nnU-Net folder (or reuses one with --work), builds the preset's
trainer and draws batches from its training loader (nnU-Net's loader and augmentation, in this process). A
patch "has lesion" when its full-resolution target has a lesion voxel; the lesion's share of the patch's
pancreas is reported too. nnU-Net centres ``oversample_foreground_percent`` of the patches on a foreground
voxel of a region drawn uniformly among the case's regions (whole pancreas, lesion), and the rest at random.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phantom", type=Path)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--work", type=Path, help="nnU-Net folders to use (default: a temporary folder)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="patch-sampling-"))
    os.environ.update({name: str(work / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    import numpy as np
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from nnunet_mtl.config import PRESETS
    from nnunet_mtl.data.prepare import prepare_dataset
    from nnunet_mtl.training.planning import ensure_planned
    from nnunet_mtl.training.run import register_trainers

    if not (work / "nnUNet_raw").is_dir():
        prepare_dataset(args.phantom, 501)
    name, plans_identifier = ensure_planned(501, args.preset, num_processes=2, log=lambda m: print(m, file=sys.stderr))
    register_trainers()
    # no augmentation workers: the batches come from this process (set after planning, whose patch-size search
    # takes its thread count from this variable)
    os.environ["nnUNet_n_proc_DA"] = "0"  # noqa: SIM112 - nnU-Net's name
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from nnunet_mtl.training.run import trainer_folder

    preset = PRESETS[args.preset]
    cls = recursive_find_python_class(str(trainer_folder()), preset.trainer, None, base_folder=str(trainer_folder()))
    folder = work / "nnUNet_preprocessed" / name
    plans = {**load_json(folder / f"{plans_identifier}.json"), "continue_training": False}
    trainer = cls(plans, "3d_fullres", 0, load_json(folder / "dataset.json"), device=torch.device("cpu"))
    trainer.initialize()
    loader, _ = trainer.get_dataloaders()
    with_lesion, shares = 0, []
    for _ in range(args.batches):
        target = next(loader)["target"]
        target = target[0] if isinstance(target, list) else target
        for patch in target:
            whole, lesion = int((patch[0] > 0).sum()), int((patch[-1] > 0).sum())
            with_lesion += lesion > 0
            if whole:
                shares.append(lesion / whole)
    patches = args.batches * trainer.configuration_manager.batch_size
    result = {
        "phantom": str(args.phantom),
        "preset": args.preset,
        "patch_size": list(trainer.configuration_manager.patch_size),
        "spacing": list(trainer.configuration_manager.spacing),
        "oversample_foreground_percent": trainer.oversample_foreground_percent,
        "patches": patches,
        "share_with_lesion": with_lesion / patches,
        "median_lesion_share_of_pancreas": float(np.median(shares)) if shares else None,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
