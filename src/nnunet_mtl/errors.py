"""Errors that the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad user input: a file or folder that cannot be used as given.

    The message is one line that names the offending path and the problem.
    """

    exit_code = 2

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(self.problem if path is None else f"{path}: {self.problem}")

    def __reduce__(self):
        # picklable, so that an error raised in a worker process reaches the CLI intact
        return type(self), (self.path, self.problem)


class OutputError(InputError):
    """An output that cannot be written (a full disk): one line naming the file; nothing partial is left."""

    exit_code = 1


def require_device(device: str) -> None:
    """Refuse ``cuda`` where PyTorch sees no CUDA device."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda but no CUDA device is available")
