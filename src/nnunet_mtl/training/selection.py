"""Checkpoint selection and early stopping on the whole-volume validation's combined metric."""

from __future__ import annotations

from dataclasses import dataclass

from nnunet_mtl.config import SelectionConfig


@dataclass
class CheckpointSelection:
    """The best combined metric so far and its epoch; ``checkpoint_best`` is saved when it improves, and
    training stops after ``patience`` epochs without improvement (counted from epoch 0 before the first
    validation). Its state travels in the checkpoint, so a resumed run continues the same count."""

    config: SelectionConfig
    num_epochs: int
    best_metric: float | None = None  # the best smoothed metric
    best_epoch: int | None = None
    smoothed: float | None = None  # the moving average after the latest validation

    def should_validate(self, epoch: int) -> bool:
        return (epoch + 1) % self.config.validate_every == 0 or epoch == self.num_epochs - 1

    def update(self, epoch: int, metric: float) -> bool:
        """Record a validation's metric; True when its smoothed value (``config.smoothing``: an exponential
        moving average over the validations) is a new best by more than ``min_delta``."""
        weight = self.config.smoothing
        self.smoothed = metric if self.smoothed is None else weight * self.smoothed + (1 - weight) * metric
        if self.best_metric is None or self.smoothed > self.best_metric + self.config.min_delta:
            self.best_metric, self.best_epoch = self.smoothed, epoch
            return True
        return False

    def epochs_without_improvement(self, epoch: int) -> int:
        return epoch - (-1 if self.best_epoch is None else self.best_epoch)

    def should_stop(self, epoch: int) -> bool:
        return self.epochs_without_improvement(epoch) >= self.config.patience


def epochs_within_budget(
    elapsed_seconds: float, done: int, budget_seconds: float, max_epochs: int, validated: bool
) -> int:
    """How many epochs fit the budget, by the wall time per epoch so far (``elapsed_seconds`` over the ``done``
    epochs, their validations, checkpoints and plots included). Never fewer than those run, nor than one more
    where the last one was not validated: the final epoch is validated."""
    fitting = int(budget_seconds * done // elapsed_seconds) if done and elapsed_seconds > 0 else max_epochs
    return min(max_epochs, max(fitting, done if validated else done + 1))
