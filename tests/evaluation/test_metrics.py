import math

import numpy as np

from nnunet_mtl.evaluation.metrics import dice, region_dice, summarize_region


def test_dice_counts():
    truth = np.zeros((4, 4, 4), bool)
    truth[:2] = True  # 32 voxels
    prediction = np.zeros_like(truth)
    prediction[1:3] = True  # 32 voxels, 16 overlap
    assert dice(prediction, truth) == 2 * 16 / 64
    assert dice(truth, truth) == 1.0
    assert dice(np.zeros_like(truth), truth) == 0.0
    assert dice(truth, np.zeros_like(truth)) == 0.0
    assert math.isnan(dice(np.zeros_like(truth), np.zeros_like(truth)))


def test_region_dice_uses_label_sets():
    truth = np.array([0, 1, 1, 2, 2])
    prediction = np.array([0, 2, 1, 1, 2])  # regions: whole {1,2} identical; lesion overlaps on 1 of 2+2
    scores = region_dice(prediction, truth)
    assert scores["whole_pancreas"] == 1.0
    assert scores["lesion"] == 0.5


def test_summary_excludes_both_empty_cases():
    summary = summarize_region([1.0, 0.5, math.nan])
    assert summary.mean_dice == 0.75 and summary.n_scored == 2 and summary.n_both_empty == 1
    assert summarize_region([math.nan]).mean_dice is None
