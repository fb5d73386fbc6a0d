"""Weights-only loading where nnU-Net's own code calls ``torch.load(weights_only=False)``.

nnunet-mtl reads its checkpoints with ``torch.load(weights_only=True)`` itself. Stock nnU-Net code that
we call (``nnUNetPredictor.initialize_from_trained_model_folder`` in ``benchmark``) loads with
``weights_only=False``, which runs any code pickled into the file; torch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``
overrides that argument. See docs/safe_loading.md.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every ``torch.load`` in the block is weights-only, whatever its ``weights_only`` argument.

    It sets a process-wide variable: use it in a process of its own (as ``benchmark`` does), not around
    code other threads run at the same time.
    """
    previous = os.environ.get(FORCE_WEIGHTS_ONLY)
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FORCE_WEIGHTS_ONLY, None)
        else:
            os.environ[FORCE_WEIGHTS_ONLY] = previous
