"""Drawing the training cases by how badly the network still segments them (``ScheduleConfig.hard_case_sampling``).

nnU-Net's loader draws every training case equally often. In a schedule of a few thousand patches the cases
whose lesion is hard to see (small, low contrast) then get as few steps as the easy ones, which the network has
learnt long before. Here a share of the draws goes to each case in proportion to its running segmentation
error, measured on the batches the network trains on anyway (no extra forward pass); the rest stays uniform,
so no case is starved. The loader draws with ``np.random.choice(p=...)`` (batchgenerators), which this sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from nnunetv2.training.loss.dice import get_tp_fp_fn_tn


def region_errors(logits: torch.Tensor, target: torch.Tensor, has_regions: bool) -> np.ndarray:
    """Per sample, the mean over the foreground regions (or labels) of 1 - soft Dice between the predicted
    probabilities and the reference: (batch,). ``target`` holds the region channels where ``has_regions``,
    else the label map (batch, 1, *spatial)."""
    logits = logits.detach().float()
    if has_regions:
        probabilities = torch.sigmoid(logits)
    else:
        probabilities = torch.softmax(logits, 1)[:, 1:]
        target = torch.zeros_like(logits).scatter_(1, target.long(), 1)[:, 1:]
    tp, fp, fn, _ = get_tp_fp_fn_tn(probabilities, target.float(), axes=list(range(2, logits.ndim)))
    dice = (2 * tp + 1) / (2 * tp + fp + fn + 1)  # a region absent from both scores 1, as an empty one should
    return (1 - dice).mean(1).cpu().numpy()


class CaseSampling:
    """The running error of each training case and the loader's sampling probabilities it gives."""

    def __init__(self, keys: Sequence[str], share: float, memory: float):
        if not keys:
            raise ValueError("hard-case sampling needs at least one training case")
        self.keys = list(keys)
        self._index = {key: i for i, key in enumerate(self.keys)}
        self.share = share
        self.memory = memory
        # an unseen case counts as fully wrong: every case is drawn early, then its own error takes over
        self.errors = np.ones(len(self.keys))
        self.draws = np.zeros(len(self.keys), dtype=np.int64)

    def update(self, keys: Sequence[str], errors: Sequence[float]) -> None:
        """Fold one batch's per-sample errors into the running errors of its cases."""
        for key, error in zip(keys, errors, strict=True):
            i = self._index[key]
            self.errors[i] = self.memory * self.errors[i] + (1 - self.memory) * float(error)
            self.draws[i] += 1

    def probabilities(self) -> np.ndarray:
        """(1 - share) spread evenly, share in proportion to the running errors; in the order of ``keys``."""
        uniform = np.full(len(self.keys), 1 / len(self.keys))
        total = self.errors.sum()
        by_error = self.errors / total if total > 0 else uniform
        p = (1 - self.share) * uniform + self.share * by_error
        return p / p.sum()

    def summary(self) -> dict:
        """Per case: running error, current probability and how often it was trained on."""
        p = self.probabilities()
        return {
            key: {"error": round(float(e), 4), "probability": round(float(q), 4), "draws": int(d)}
            for key, e, q, d in zip(self.keys, self.errors, p, self.draws, strict=True)
        }
