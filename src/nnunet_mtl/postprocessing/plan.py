"""The postprocessing of a model folder (``nnunet_mtl_postprocessing.json``): determined on its validation
predictions after training, applied by ``predict``. A folder without one predicts with no postprocessing."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from nnunet_mtl.errors import InputError
from nnunet_mtl.io import write_json_atomic
from nnunet_mtl.postprocessing.components import STEPS, apply_steps
from nnunet_mtl.postprocessing.lesion_threshold import DEFAULT_THRESHOLD
from nnunet_mtl.postprocessing.temperature import scaled_probabilities

POSTPROCESSING_FILE = "nnunet_mtl_postprocessing.json"


@dataclass(frozen=True)
class Postprocessing:
    temperature: float = 1.0
    mask_steps: tuple[str, ...] = ()
    # how it was determined: the validation cases, and each candidate's numbers before and after
    determined_on: dict = field(default_factory=dict, compare=False)
    lesion_threshold: float = DEFAULT_THRESHOLD  # the lesion region's probability cut (lesion_threshold.py)

    @property
    def is_identity(self) -> bool:
        return self.temperature == 1.0 and not self.mask_steps and self.lesion_threshold == DEFAULT_THRESHOLD

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return scaled_probabilities(logits, self.temperature)

    def segmentation(self, labels: np.ndarray) -> np.ndarray:
        return apply_steps(labels, self.mask_steps)

    def settings(self) -> dict:
        """What changes a prediction (for a rerun to know whether an earlier output is still valid)."""
        settings = {"temperature": self.temperature, "mask_steps": list(self.mask_steps)}
        if self.lesion_threshold != DEFAULT_THRESHOLD:  # so that outputs written before thresholds stay valid
            settings["lesion_threshold"] = self.lesion_threshold
        return settings

    def to_json(self) -> dict:
        return {**asdict(self), "mask_steps": list(self.mask_steps)}


NONE = Postprocessing()


def read_postprocessing(model_dir: Path) -> Postprocessing:
    path = Path(model_dir) / POSTPROCESSING_FILE
    if not path.is_file():
        return NONE
    try:
        values = json.loads(path.read_text())
        postprocessing = Postprocessing(
            float(values["temperature"]),
            tuple(values["mask_steps"]),
            values.get("determined_on", {}),
            float(values.get("lesion_threshold", DEFAULT_THRESHOLD)),  # files written before thresholds: nnU-Net's 0.5
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise InputError(path, f"not a postprocessing file of nnunet-mtl ({error})") from None
    unknown = set(postprocessing.mask_steps) - set(STEPS)
    if unknown or not postprocessing.temperature > 0:
        raise InputError(path, f"unknown steps {sorted(unknown)} or temperature {postprocessing.temperature} <= 0")
    if not 0 < postprocessing.lesion_threshold < 1:
        raise InputError(path, f"lesion threshold {postprocessing.lesion_threshold} outside (0, 1)")
    return postprocessing


def write_postprocessing(model_dir: Path, postprocessing: Postprocessing) -> Path:
    path = Path(model_dir) / POSTPROCESSING_FILE
    write_json_atomic(path, postprocessing.to_json())
    return path
