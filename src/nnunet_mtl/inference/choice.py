"""A model folder's inference configuration (``nnunet_mtl_inference.json``): the path (one pass where memory
allows, or the sliding window) and whether to mirror, chosen on the validation split at the end of training
(``training/inference_choice.py``), as nnU-Net chooses its postprocessing there. ``predict`` uses it unless
told otherwise (``--path``, ``--tta``/``--no-tta``); a folder without one predicts with one pass and no
mirroring."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nnunet_mtl.errors import InputError
from nnunet_mtl.inference.engine import PathChoice
from nnunet_mtl.io import write_json_atomic

INFERENCE_FILE = "nnunet_mtl_inference.json"
PATHS = ("auto", "whole", "sliding")


@dataclass(frozen=True)
class InferenceChoice:
    path: PathChoice = "auto"  # "auto": one pass where its memory estimate fits the budget, else sliding window
    mirroring: bool = False  # average over the model's mirror axes (8 passes for 3 axes), nnU-Net's TTA
    determined_on: dict = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        path = {"auto": "one pass", "whole": "one pass (forced)", "sliding": "sliding window"}[self.path]
        return f"{path}{' + mirroring' if self.mirroring else ''}"

    def to_json(self) -> dict:
        return asdict(self)


# the candidates, cheapest first on a case larger than the patch; the last is stock nnU-Net's own inference
# (its tiles at the tile step, every mirroring), the reference the others must match
CANDIDATES = (
    InferenceChoice("auto", False),
    InferenceChoice("sliding", False),
    InferenceChoice("auto", True),
    InferenceChoice("sliding", True),
)
STOCK = CANDIDATES[-1]
UNDETERMINED = CANDIDATES[0]


def read_inference_choice(model_dir: Path) -> InferenceChoice:
    path = Path(model_dir) / INFERENCE_FILE
    if not path.is_file():
        return UNDETERMINED
    try:
        values = json.loads(path.read_text())
        choice = InferenceChoice(values["path"], values["mirroring"], values.get("determined_on", {}))
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(path, f"not an inference configuration of nnunet-mtl ({error})") from None
    if choice.path not in PATHS:
        raise InputError(path, f"unknown path {choice.path!r} (expected one of {', '.join(PATHS)})")
    if not isinstance(choice.mirroring, bool):
        raise InputError(path, f"mirroring must be true or false, got {choice.mirroring!r}")
    return choice


def write_inference_choice(model_dir: Path, choice: InferenceChoice) -> Path:
    path = Path(model_dir) / INFERENCE_FILE
    write_json_atomic(path, choice.to_json())
    return path
