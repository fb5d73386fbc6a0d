"""A model's inference configuration (``fold_K/nnunet_mtl_inference.json``): the path (one pass where memory
allows, or the sliding window) and whether to mirror, chosen on each fold's validation split at the end of its
training (``training/inference_choice.py``), as nnU-Net chooses its postprocessing there. ``predict`` uses it
unless told otherwise (``--path``, ``--tta``/``--no-tta``); a model without one predicts with one pass and no
mirroring."""

from __future__ import annotations

import json
from collections.abc import Sequence
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


DETERMINED_ON_KEYS = ("source", "cases", "reference", "dice_tolerance", "subtype_cases", "candidates")


def choice_file(fold_dir: Path) -> Path:
    return Path(fold_dir) / INFERENCE_FILE


def read_fold_choice(fold_dir: Path) -> InferenceChoice | None:
    """The choice made on one fold's validation split; None where the fold has none."""
    path = choice_file(fold_dir)
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
        choice = InferenceChoice(values["path"], values["mirroring"], values.get("determined_on", {}))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, KeyError, TypeError) as error:
        raise InputError(path, f"not an inference configuration of nnunet-mtl ({type(error).__name__})") from None
    if choice.path not in PATHS:
        raise InputError(path, f"unknown path {choice.path!r} (expected one of {', '.join(PATHS)})")
    if not isinstance(choice.mirroring, bool):
        raise InputError(path, f"mirroring must be true or false, got {choice.mirroring!r}")
    info = choice.determined_on
    if not isinstance(info, dict) or (info and not all(key in info for key in DETERMINED_ON_KEYS)):
        raise InputError(path, f"determined_on must be empty or hold {', '.join(DETERMINED_ON_KEYS)}")
    return choice


def read_inference_choice(model_dir: Path, folds: Sequence[int]) -> InferenceChoice:
    """The choice for a model of these folds: each fold's own (``fold_K/nnunet_mtl_inference.json``), and
    where they differ the dearest of them (an ensemble is never predicted more cheaply than any of its folds
    was validated); a fold without one counts as one pass."""
    chosen = [c for c in (read_fold_choice(Path(model_dir) / f"fold_{f}") for f in folds) if c is not None]
    if not chosen:
        return UNDETERMINED
    return max(chosen, key=lambda c: (c.mirroring, c.path == "sliding"))  # the order of CANDIDATES


def write_inference_choice(fold_dir: Path, choice: InferenceChoice) -> Path:
    path = choice_file(fold_dir)
    write_json_atomic(path, choice.to_json())
    return path


def remove_inference_choice(fold_dir: Path) -> None:
    """A fold trained again has no choice until its final validation makes one."""
    choice_file(fold_dir).unlink(missing_ok=True)
