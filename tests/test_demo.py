import pytest

from nnunet_mtl.cli import main
from nnunet_mtl.demo import MARKER, EpochCondenser, summary_table
from tests.conftest import tree_snapshot

LOG = """\
2026-11-29 14:45:09.416076: Epoch 3
2026-11-29 14:45:09.416250: Current learning rate: 0.00864
2026-11-29 14:45:21.025722: train_loss -0.055 (segmentation -0.1638 classification 1.0881 )
2026-11-29 14:45:21.025935: val_loss -0.2163 Pseudo dice [np.float32(0.0), np.float32(0.0)]
2026-11-29 14:45:21.100000: whole-volume validation (12 cases): Dice whole 0.8123, lesion 0.1000, \
subtype macro F1 0.3333, combined 0.4000
2026-11-29 14:45:21.100001: new best combined metric 0.4000: saving checkpoint_best
2026-11-29 14:45:21.026033: Epoch time: 11.61 s
2026-11-29 14:45:21.100002: time budget 7.5 min: 38 epochs
2026-11-29 14:45:21.200000: Epoch 4
2026-11-29 14:45:21.200001: phase 2: joint training, classification loss reaches the encoder
2026-11-29 14:45:30.000000: train_loss -0.1 (segmentation -0.2 classification 0.9 )
2026-11-29 14:45:30.100000: Epoch time: 8.80 s
"""


def test_epoch_lines_condense_to_one_line_per_epoch():
    lines = []
    condenser = EpochCondenser(40, lines.append)
    for line in LOG.splitlines():
        condenser.feed(line + "\n")
    assert lines == [
        "  epoch   4/40  loss seg -0.164 cls 1.088   11.6 s  | validation: Dice whole 0.8123, lesion 0.1000, "
        "subtype macro F1 0.3333, combined 0.4000  (new best)",
        "  phase 2: joint training, classification loss reaches the encoder",
        "  epoch   5/38  loss seg -0.200 cls 0.900    8.8 s",  # the budget sized the schedule
    ]


def test_epoch_count_never_shows_fewer_epochs_than_run():
    """The trainer logs the budget's count only when it moves by more than one epoch."""
    lines = []
    condenser = EpochCondenser(3, lines.append)
    for epoch in range(5):
        condenser.feed(f"2026-11-29 14:45:30.000000: Epoch {epoch}\n")
        condenser.feed("2026-11-29 14:45:31.000000: Epoch time: 1.00 s\n")
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3", "4/4", "5/5"]


def test_summary_table_puts_targets_beside_what_was_reached():
    metrics = {
        "segmentation": {
            "whole_pancreas": {"mean_dice": 0.93, "mean_dice_ci": [0.921, 0.94]},
            "lesion": {"mean_dice": 0.25, "mean_dice_ci": [None, None]},
        },
        "classification": {"macro_f1": 0.8, "accuracy": 0.75, "intervals": {"macro_f1": {"ci": [0.6, 0.9]}}},
    }
    rows = [line.split() for line in summary_table(metrics).splitlines()]
    assert rows[1][-5:] == [">=", "0.91", "0.9300", "0.921-0.940", "yes"]
    assert rows[2][-5:] == [">=", "0.31", "0.2500", "-", "no"]
    assert rows[3][-5:] == [">=", "0.70", "0.8000", "0.600-0.900", "yes"]


@pytest.mark.parametrize("earlier_demo", [False, True])
def test_demo_refuses_a_folder_that_is_not_an_earlier_demo(tmp_path, capsys, earlier_demo):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    if earlier_demo:  # an earlier demo folder is replaced; checked here without running the demo
        from nnunet_mtl.demo import _prepare_out

        (out / MARKER).write_text("")
        _prepare_out(out)
        assert tree_snapshot(out) == {MARKER}
        return
    before = tree_snapshot(out)
    assert main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not an earlier demo folder" in err
    assert tree_snapshot(out) == before
