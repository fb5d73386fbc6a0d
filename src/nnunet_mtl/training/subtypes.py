"""The case -> subtype map of a prepared dataset (``subtypes.json`` of ``nnunet-mtl prepare``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from nnunet_mtl.data.prepare import SUBTYPES_FILE


class UnknownCaseError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class SubtypeMap:
    subtypes: dict[str, int]
    path: Path  # where it was read from, for error messages

    @classmethod
    def load(cls, *folders: Path) -> SubtypeMap:
        """From the first folder that holds ``subtypes.json``."""
        for folder in folders:
            path = Path(folder) / SUBTYPES_FILE
            if path.is_file():
                return cls({k: int(v) for k, v in json.loads(path.read_text()).items()}, path)
        raise FileNotFoundError(
            f"no {SUBTYPES_FILE} in {', '.join(map(str, folders))}: run `nnunet-mtl prepare` for this dataset"
        )

    def __getitem__(self, case: str) -> int:
        if case not in self.subtypes:
            raise UnknownCaseError(f"case {case} has no subtype in {self.path}")
        return self.subtypes[case]

    def targets(self, cases: Iterable[str]) -> torch.Tensor:
        """The subtypes of ``cases`` as class indices; a case without one is an error, never class 0."""
        return torch.tensor([self[case] for case in cases], dtype=torch.long)

    def require(self, cases: Iterable[str], what: str) -> None:
        """Refuse ``cases`` (of ``what``, e.g. "the validation split of fold 0") where any lacks a subtype."""
        missing = sorted(set(cases) - set(self.subtypes))
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise UnknownCaseError(f"{len(missing)} case(s) of {what} have no subtype in {self.path}: {shown}")

    def to_json(self) -> str:
        return json.dumps(self.subtypes, indent=2, sort_keys=True) + "\n"
