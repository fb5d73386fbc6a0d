"""The multitask predictor: nnU-Net's preprocessing and export around one forward pass per case.

:meth:`MultitaskPredictor.predict_folder` overlaps the three stages: while case ``i`` is in the
network, case ``i + 1`` is read and preprocessed in one background thread and case ``i - 1`` is
resampled back and written in another (both threads live for the whole run; no pool is spawned per
case). Every mask and CSV is written to a temporary name and renamed, and a case counts as done only
when its mask and its record exist, so an interrupted run leaves no partial file and a rerun does only
the rest.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from nnunet_mtl.config import InferenceConfig
from nnunet_mtl.console import Progress
from nnunet_mtl.data.layout import Case
from nnunet_mtl.data.subtype_csv import write_subtype_outputs
from nnunet_mtl.inference.cases import mask_file_name, read_image, segmentation_in_input_geometry, write_mask
from nnunet_mtl.inference.engine import InferenceEngine, PathChoice
from nnunet_mtl.inference.forward import CasePrediction
from nnunet_mtl.inference.model import LoadedModel
from nnunet_mtl.inference.shards import RESULTS_LOCK, RUN_LOCK, exclusive, running
from nnunet_mtl.io import remove_stale_temp_files, write_text_atomic
from nnunet_mtl.postprocessing.lesion_threshold import DEFAULT_THRESHOLD, thresholded_labels
from nnunet_mtl.postprocessing.plan import NONE as NO_POSTPROCESSING
from nnunet_mtl.postprocessing.temperature import scaled_probabilities

RECORDS_FOLDER = ".nnunet-mtl"  # per-case records inside the output folder, for resuming


@dataclass(frozen=True)
class PreprocessedCase:
    case: Case
    data: torch.Tensor  # (channels, *spatial) after nnU-Net's cropping, resampling and normalisation
    properties: dict  # nnU-Net's properties, needed to restore the input geometry
    read_seconds: float  # reading the image file or series
    seconds: float  # nnU-Net's preprocessing after the read


@dataclass(frozen=True)
class CaseResult:
    name: str
    subtype: int
    probabilities: list[float]
    path: str  # "whole" or "sliding"
    forward_passes: int
    seconds: dict[str, float] = field(default_factory=dict)  # preprocess, forward, export
    settings: str = ""  # what produced it (model members, TTA, precision): a rerun reuses only its own
    probabilities_uncalibrated: list[float] | None = None  # the network's own, where a temperature applies

    def to_json(self) -> dict:
        return asdict(self)


class MultitaskPredictor:
    def __init__(
        self,
        model: LoadedModel,
        device: torch.device | str = "cpu",
        tta: bool = False,
        config: InferenceConfig | None = None,
        path: PathChoice = "auto",
        warn: Callable[[str], None] | None = None,
        postprocess: bool = True,
    ):
        """``postprocess``: apply the model folder's postprocessing (mask steps, temperature), if any."""
        self.model = model
        self.tta = tta
        self.postprocessing = model.postprocessing if postprocess else NO_POSTPROCESSING
        self.device = torch.device(device)
        for network in model.networks:
            network.to(self.device).eval()
        self.engine = InferenceEngine(
            model.networks,
            model.configuration_manager,
            self.device,
            config,
            (model.mirror_axes or ()) if tta else None,
            path,
            warn,
        )
        self.preprocessor = model.configuration_manager.preprocessor_class(verbose=False)
        self.export_threads = max(1, torch.get_num_threads())
        self.settings = json.dumps(
            {
                "model": str(model.folder.resolve()),
                "members": model.members,
                "checkpoints": model.digests,  # a model retrained under the same folder is another model
                "tta": tta,
                "precision": self.precision,
                "path": path,
                "tile_step_size": self.engine.config.tile_step_size,
                "postprocessing": self.postprocessing.settings(),
            },
            sort_keys=True,
        )

    @property
    def precision(self) -> str:
        return self.engine.precision

    # ------------------------------------------------------------------ the three stages

    def preprocess(self, case: Case) -> PreprocessedCase:
        start = time.perf_counter()
        data, properties = read_image(case.image)
        read = time.perf_counter()
        model = self.model
        data, _, properties = self.preprocessor.run_case_npy(
            data, None, properties, model.plans_manager, model.configuration_manager, model.dataset_json
        )
        tensor = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        return PreprocessedCase(case, tensor, properties, read - start, time.perf_counter() - read)

    def forward(self, data: torch.Tensor) -> CasePrediction:
        """Both outputs for one preprocessed case, averaged over the model's members (folds, checkpoints)."""
        return self.engine.forward(data)

    def segmentation_of(self, prediction: CasePrediction, properties: dict) -> np.ndarray:
        """The (z, y, x) label map in the input's geometry, through nnU-Net's own export; with a lesion threshold
        other than 0.5, from the exported region probabilities (the mask steps follow in ``export``)."""
        model = self.model
        threshold = self.postprocessing.lesion_threshold
        thresholded = threshold != DEFAULT_THRESHOLD and model.label_manager.has_regions
        exported = segmentation_in_input_geometry(
            prediction.segmentation_logits,
            model.plans_manager,
            model.configuration_manager,
            model.label_manager,
            properties,
            self.export_threads,
            return_probabilities=thresholded,
        )
        return thresholded_labels(exported[1], threshold) if thresholded else exported

    def export(
        self, pre: PreprocessedCase, prediction: CasePrediction, out_dir: Path, forward_seconds: float
    ) -> CaseResult:
        start = time.perf_counter()
        segmentation = self.postprocessing.segmentation(self.segmentation_of(prediction, pre.properties))
        logits = prediction.class_logits.float().cpu().numpy()
        probabilities = self.postprocessing.probabilities(logits)
        calibrated = self.postprocessing.temperature != 1.0
        result_seconds = {"read": pre.read_seconds, "preprocess": pre.seconds, "forward": forward_seconds}
        result = CaseResult(
            pre.case.name,
            int(probabilities.argmax()),
            [float(p) for p in probabilities],
            prediction.path,
            prediction.num_forward_passes,
            result_seconds,
            self.settings,
            [float(p) for p in scaled_probabilities(logits, 1.0)] if calibrated else None,
        )
        # a case is done when its record exists: drop an old one, write the mask, then the record
        _record_path(out_dir, result.name).unlink(missing_ok=True)
        write_mask(segmentation, pre.properties, Path(out_dir) / mask_file_name(pre.case.name))
        result_seconds["export"] = time.perf_counter() - start
        _write_record(out_dir, result)
        return result

    # ------------------------------------------------------------------ whole runs

    def predict_case(self, case: Case, out_dir: Path) -> CaseResult:
        """Preprocess, forward and export one case in sequence (no overlap)."""
        pre = self.preprocess(case)
        start = time.perf_counter()
        prediction = self.forward(pre.data)
        return self.export(pre, prediction, out_dir, time.perf_counter() - start)

    def predict_folder(
        self,
        cases: Sequence[Case],
        out_dir: Path,
        overwrite: bool = False,
        progress: Progress | None = None,
        log: Callable[[str], None] | None = None,
        all_cases: Sequence[Case] | None = None,
    ) -> list[CaseResult]:
        """Predict every case (those already done are skipped unless ``overwrite``) and write the CSVs.

        With ``all_cases`` (the whole folder, of which ``cases`` is this part's share: inference/shards.py)
        the CSVs are rebuilt from the records of every case of ``all_cases`` finished with these settings."""
        out_dir = Path(out_dir)
        records = out_dir / RECORDS_FOLDER
        done = {} if overwrite else finished_cases(out_dir, cases, self.settings)
        if done and log is not None:
            log(f"{len(done)} of {len(cases)} cases already predicted in {out_dir} with these settings: skipped")
        todo = [c for c in cases if c.name not in done]
        results = dict(done)
        with contextlib.ExitStack() as run:
            joined: list[bool] = []

            def join_run() -> None:  # before this run's first write: a bad first case leaves nothing behind
                if not joined:
                    run.enter_context(running(records / RUN_LOCK, lambda: _remove_temp_files(out_dir)))
                    joined.append(True)

            try:
                with (
                    ThreadPoolExecutor(1, thread_name_prefix="preprocess") as reader,
                    ThreadPoolExecutor(1, thread_name_prefix="export") as writer,
                ):
                    upcoming = reader.submit(self.preprocess, todo[0]) if todo else None
                    exporting: Future | None = None
                    indices = range(len(todo)) if progress is None else progress(range(len(todo)), len(todo), "predict")
                    for i in indices:
                        pre = upcoming.result()
                        join_run()
                        upcoming = reader.submit(self.preprocess, todo[i + 1]) if i + 1 < len(todo) else None
                        start = time.perf_counter()
                        prediction = self.forward(pre.data)
                        seconds = time.perf_counter() - start
                        if exporting is not None:  # at most one case waits for export: memory stays bounded
                            result = exporting.result()
                            results[result.name] = result
                        exporting = writer.submit(self.export, pre, prediction, out_dir, seconds)
                    if exporting is not None:
                        result = exporting.result()
                        results[result.name] = result
            except Exception:
                # a part of a sharded run that fails may be the last to end: the CSVs the others wrote lack
                # what it finished (a whole run that fails writes none, as before)
                if joined and all_cases is not None and len(all_cases) > len(cases):
                    rebuild_results(out_dir, all_cases, self.settings)
                raise
            join_run()
            _, missing = rebuild_results(out_dir, cases if all_cases is None else all_cases, self.settings)
        if missing and log is not None:
            log(missing_line(missing, out_dir))
        return [results[c.name] for c in cases]


def _remove_temp_files(out_dir: Path) -> None:
    for folder in (out_dir, out_dir / RECORDS_FOLDER):  # what a killed run was writing
        remove_stale_temp_files(folder)


def missing_line(missing: Sequence[str], out_dir: Path) -> str:
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    return (
        f"{len(missing)} case(s) still missing in {out_dir} ({shown}): parts still running, not run yet, or "
        "predicted with other settings; the CSVs hold the others"
    )


def _record_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / RECORDS_FOLDER / f"{name}.json"


def _write_record(out_dir: Path, result: CaseResult) -> None:
    write_text_atomic(_record_path(out_dir, result.name), json.dumps(result.to_json()) + "\n")


def finished_cases(out_dir: Path, cases: Iterable[Case], settings: str | None = None) -> dict[str, CaseResult]:
    """Cases of an earlier (maybe interrupted) run into ``out_dir`` with a mask and a record, made with
    the same ``settings`` (model, TTA, precision) when given."""
    done = {}
    for case in cases:
        record = _record_path(out_dir, case.name)
        if record.is_file() and (Path(out_dir) / mask_file_name(case.name)).is_file():
            try:
                result = CaseResult(**json.loads(record.read_text()))
            except (json.JSONDecodeError, TypeError):
                continue  # an unreadable record: predict the case again
            if settings is None or result.settings == settings:
                done[case.name] = result
    return done


def write_results(out_dir: Path, results: Sequence[CaseResult]) -> list[Path]:
    """The subtype CSVs of ``results``."""
    uncalibrated = {r.name: r.probabilities_uncalibrated for r in results}
    return write_subtype_outputs(
        out_dir,
        {r.name: r.subtype for r in results},
        {r.name: r.probabilities for r in results},
        uncalibrated if all(p is not None for p in uncalibrated.values()) and results else None,
    )


def rebuild_results(out_dir: Path, cases: Sequence[Case], settings: str) -> tuple[list[CaseResult], list[str]]:
    """The CSVs of every case of ``cases`` finished in ``out_dir`` with ``settings``, rebuilt from the records
    under the folder's results lock (several parts may finish at once); returns them and the names missing."""
    out_dir = Path(out_dir)
    with exclusive(out_dir / RECORDS_FOLDER / RESULTS_LOCK):
        done = finished_cases(out_dir, cases, settings)
        results = [done[c.name] for c in cases if c.name in done]
        if results:
            write_results(out_dir, results)
    return results, [c.name for c in cases if c.name not in done]


def folder_status(out_dir: Path, cases: Sequence[Case]) -> tuple[list[str], list[str], int]:
    """(finished, missing) case names of ``cases`` in ``out_dir``, and how many different settings (models,
    options) the finished ones were predicted with."""
    done = finished_cases(out_dir, cases)
    settings = Counter(result.settings for result in done.values())
    return [c.name for c in cases if c.name in done], [c.name for c in cases if c.name not in done], len(settings)
