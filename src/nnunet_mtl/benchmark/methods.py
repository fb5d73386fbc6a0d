"""The inference methods that ``nnunet-mtl benchmark`` compares, each run in its own fresh process.

Every method predicts the same cases with the same weights, twice: case by case in sequence (the
seconds per case, whose median is reported) and as one folder in the tool's own batch mode
(preprocessing and export overlapped; the folder's seconds per case). The process's peak resident
memory (CPU) or peak allocated CUDA memory is reported with the result.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from nnunet_mtl.config import InferenceConfig
from nnunet_mtl.data.layout import Case


def stock_precision(device: str) -> str:
    """What stock nnU-Net's predictor computes in: fp16 autocast on CUDA, fp32 on a CPU (no autocast)."""
    return "fp16" if device == "cuda" else "fp32"


@dataclass(frozen=True)
class MethodSpec:
    key: str
    label: str
    kind: str  # "stock" (nnU-Net's nnUNetPredictor) or "ours" (MultitaskPredictor)
    model_dir: Path  # the multitask model folder; for "stock" its exported segmentation-only copy
    folds: tuple[int, ...] | None
    checkpoint: str  # "best" or "final"
    device: str
    out_dir: Path
    cases: tuple[Case, ...]
    tta: bool = False
    path: str = "auto"  # ours: "auto", "whole" or "sliding"
    tile_step_size: float = InferenceConfig.tile_step_size  # ours, on the sliding-window path
    precision: str = "auto"
    encoder_twice: bool = False  # ours: the seed's forward (full network, then the encoder again)
    folder_run: bool = True  # also time the folder (batch) mode
    threads: int = 0  # torch intra-op threads; 0: all cores, at most nnU-Net's default_num_processes


def run_method(spec: MethodSpec) -> dict:
    from nnunetv2.configuration import default_num_processes

    # stock nnU-Net caps its forward at default_num_processes threads: every method gets the same
    torch.set_num_threads(spec.threads or min(os.cpu_count() or 1, default_num_processes))
    device = torch.device(spec.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run = _run_stock if spec.kind == "stock" else _run_ours
    result = run(spec, device)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    result["threads"] = torch.get_num_threads()
    return result


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _run_ours(spec: MethodSpec, device: torch.device) -> dict:
    from nnunet_mtl.benchmark.seed_network import EncoderTwiceUNet
    from nnunet_mtl.inference.model import load_model
    from nnunet_mtl.inference.predictor import MultitaskPredictor, write_results

    model = load_model(spec.model_dir, spec.folds, (spec.checkpoint,), device)
    if spec.encoder_twice:
        model.networks = [EncoderTwiceUNet(network) for network in model.networks]
    # no postprocessing: the rows compare the same network's outputs with stock nnU-Net's
    predictor = MultitaskPredictor(
        model,
        device,
        spec.tta,
        InferenceConfig(tile_step_size=spec.tile_step_size, precision=spec.precision),
        spec.path,
        postprocess=False,
    )
    seconds, results = {}, []
    for case in spec.cases:
        start = time.perf_counter()
        results.append(predictor.predict_case(case, spec.out_dir))
        seconds[case.name] = time.perf_counter() - start
    write_results(spec.out_dir, results)
    folder_seconds = None
    if spec.folder_run:
        with tempfile.TemporaryDirectory(dir=spec.out_dir.parent) as scratch:
            folder_seconds = _timed(lambda: predictor.predict_folder(spec.cases, Path(scratch), overwrite=True))
    return {
        "seconds_per_case": seconds,
        "folder_seconds": folder_seconds,
        "precision": predictor.precision,
        "paths": sorted({r.path for r in results}),
        "forward_passes_per_case": statistics.median(r.forward_passes for r in results),
        "forward_passes": {r.name: r.forward_passes for r in results},
        "stage_seconds_median": {
            stage: statistics.median(r.seconds[stage] for r in results)
            for stage in ("read", "preprocess", "forward", "export")
        },
        "subtypes": {r.name: r.subtype for r in results},
        "subtype_probabilities": {r.name: r.probabilities for r in results},
    }


def _run_stock(spec: MethodSpec, device: torch.device) -> dict:
    """nnU-Net's own predictor with its defaults, through its public API."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_mtl.model.checkpoint import weights_only_loads

    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        predictor = nnUNetPredictor(device=device, verbose=False, allow_tqdm=False)  # step 0.5, Gaussian, mirroring
        with weights_only_loads():  # nnU-Net's loader passes weights_only=False; the export needs no more
            predictor.initialize_from_trained_model_folder(
                str(spec.model_dir), spec.folds, checkpoint_name=f"checkpoint_{spec.checkpoint}.pth"
            )
        seconds = {}
        for case in spec.cases:
            seconds[case.name] = _timed(
                lambda case=case: predictor.predict_from_files_sequential(
                    [[str(case.image)]], [str(spec.out_dir / case.name)], save_probabilities=False, overwrite=True
                )
            )
        folder_seconds = None
        if spec.folder_run:
            scratch = Path(tempfile.mkdtemp(dir=spec.out_dir.parent))
            try:
                # nnUNetv2_predict's defaults: 3 preprocessing and 3 export processes
                folder_seconds = _timed(
                    lambda: predictor.predict_from_files(
                        [[str(c.image)] for c in spec.cases],
                        [str(scratch / c.name) for c in spec.cases],
                        save_probabilities=False,
                        overwrite=True,
                        num_processes_preprocessing=3,
                        num_processes_segmentation_export=3,
                    )
                )
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return {
        "seconds_per_case": seconds,
        "folder_seconds": folder_seconds,
        "precision": stock_precision(device.type),
        "paths": ["sliding"],
        "forward_passes_per_case": None,  # the same tiles and flips as (a'), which counts them
        "subtypes": None,
    }
