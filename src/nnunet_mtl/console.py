"""What the command line and the demo show while they work."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

# what the library's long loops take as ``progress``: (iterable, total, description) -> iterable
Progress = Callable[[Iterable, int, str], Iterable]


def progress_bar(iterable: Iterable, total: int | None = None, desc: str | None = None) -> Iterable:
    """A tqdm bar of cases on stderr; tqdm leaves it out where stderr is not a terminal (``disable=None``)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="case", file=sys.stderr, disable=None)
