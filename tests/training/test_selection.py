"""Checkpoint selection and early stopping, on their own (the trainer's runs are in test_trainer.py)."""

import pytest

from nnunet_mtl.config import LossConfig, SelectionConfig
from nnunet_mtl.training.selection import CheckpointSelection, epochs_within_budget


def test_validates_every_n_epochs_and_at_the_last():
    selection = CheckpointSelection(SelectionConfig(validate_every=4), num_epochs=10)
    assert [e for e in range(10) if selection.should_validate(e)] == [3, 7, 9]


def test_a_new_best_must_beat_the_old_by_min_delta():
    selection = CheckpointSelection(SelectionConfig(min_delta=0.01), num_epochs=100)
    assert selection.update(3, 0.50)
    assert not selection.update(7, 0.505)  # within min_delta: not better
    assert (selection.best_metric, selection.best_epoch) == (0.50, 3)
    assert selection.update(11, 0.52)
    assert (selection.best_metric, selection.best_epoch) == (0.52, 11)
    assert not selection.update(15, float("nan"))


def test_patience_counts_from_the_best_epoch_or_from_the_start():
    selection = CheckpointSelection(SelectionConfig(patience=5), num_epochs=100)
    assert selection.epochs_without_improvement(0) == 1  # before any validation: counted from epoch -1
    assert not selection.should_stop(3) and selection.should_stop(4)
    selection.update(2, 0.4)
    assert selection.epochs_without_improvement(6) == 4 and not selection.should_stop(6)
    assert selection.should_stop(7)


def test_state_restored_from_a_checkpoint_continues_the_count():
    restored = CheckpointSelection(SelectionConfig(patience=5), 100, best_metric=0.4, best_epoch=2)
    assert restored.should_stop(7) and not restored.update(8, 0.4)


def test_phases_and_classification_weight():
    loss = LossConfig(phase1_epochs=4, phase1_cls_weight=0.01, phase2_cls_weight=0.1)
    assert [loss.phase(e) for e in (0, 3, 4, 9)] == [1, 1, 2, 2]
    assert [loss.cls_weight(e) for e in (3, 4)] == [0.01, 0.1]


def test_smoothing_selects_on_the_moving_average():
    """A chance jump on a small validation split does not win the selection on its own."""
    selection = CheckpointSelection(SelectionConfig(smoothing=0.5, min_delta=0.0), num_epochs=100)
    for epoch, metric in ((3, 0.2), (7, 0.6), (11, 0.3), (15, 0.5), (19, 0.55)):
        selection.update(epoch, metric)
    # averages 0.2, 0.4, 0.35, 0.425, 0.4875: the raw best (0.6 at epoch 7) is not the smoothed best
    assert selection.best_epoch == 19 and selection.best_metric == pytest.approx(0.4875)
    assert selection.smoothed == pytest.approx(0.4875)


def test_epochs_within_budget_follow_the_measured_epoch_time():
    assert epochs_within_budget(22.0, 2, 110.0, 1000, validated=True) == 10  # 110 s / 11 s per epoch
    assert epochs_within_budget(22.0, 2, 110.0, 8, validated=True) == 8  # never above the upper bound
    assert epochs_within_budget(180.0, 3, 100.0, 1000, validated=True) == 3  # over budget: stop now
    assert epochs_within_budget(180.0, 3, 100.0, 1000, validated=False) == 4  # ... after a validated epoch
