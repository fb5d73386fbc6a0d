"""Several ``predict`` runs into one output folder: nnU-Net's ``-num_parts/-part_id`` split of the cases, and
the file locks that keep the runs' shared files whole.

Each part writes only its own cases (mask, then record). Whichever part finishes rebuilds the subtype CSVs from
every record in the folder while it holds the folder's results lock, so the part that finishes last (or is
rerun last) writes CSVs that hold every finished case once. A run also holds a shared lock while it writes: the
temporary files of a killed run are removed only by a run that finds no other one running.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from nnunet_mtl.errors import InputError

RESULTS_LOCK = ".results.lock"  # held while the CSVs are rebuilt from the records
RUN_LOCK = ".run.lock"  # held shared by every running part; exclusively only to remove stale temporary files

T = TypeVar("T")


def check_parts(num_parts: int, part_id: int) -> None:
    if num_parts < 1:
        raise InputError(None, f"--num-parts must be at least 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise InputError(None, f"--part-id must be in 0..{num_parts - 1} for --num-parts {num_parts}, got {part_id}")


def part_of(cases: Sequence[T], num_parts: int, part_id: int) -> list[T]:
    """This part's cases, as nnU-Net splits them (every ``num_parts``-th case from ``part_id``)."""
    check_parts(num_parts, part_id)
    return list(cases[part_id::num_parts])


def _open_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a")


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block; waits for other holders."""
    with _open_lock(path) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def running(path: Path, when_alone: Callable[[], object]) -> Iterator[None]:
    """Hold a shared ``flock`` on ``path`` for the block, after calling ``when_alone`` if no other run holds
    one (then what the folder holds of unfinished writes is a killed run's)."""
    with _open_lock(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            when_alone()
        fcntl.flock(handle, fcntl.LOCK_SH)  # converts the exclusive lock, or waits out another run's cleanup
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
