"""One confidence binning for ECE and the calibration plot."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from stages.core.metrics import ConfidenceBin, confidence_bins, ece
from stages.student.evaluation import write_csv

# top confidences 0.9 (right), 0.8 (wrong), 0.55 (right), 0.45 (wrong), 0.6 (right)
PROBS = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.55, 0.45, 0.0], [0.45, 0.3, 0.25], [0.4, 0.6, 0.0]])
ANSWERS = np.array([0, 0, 0, 1, 1])


def test_bins_hold_mean_confidence_accuracy_and_count():
    # 5 bins of width 0.2, right-closed: (0.4, 0.6] holds 0.45, 0.55, 0.6; (0.6, 0.8] 0.8; (0.8, 1] 0.9
    assert confidence_bins(PROBS, ANSWERS, 5) == [
        ConfidenceBin(pytest.approx((0.45 + 0.55 + 0.6) / 3), pytest.approx(2 / 3), 3),
        ConfidenceBin(pytest.approx(0.8), 0.0, 1),
        ConfidenceBin(pytest.approx(0.9), 1.0, 1),
    ]


def test_ece_is_the_count_weighted_gap_of_the_bins():
    direct = (3 * abs(2 / 3 - (0.45 + 0.55 + 0.6) / 3) + 1 * abs(0.0 - 0.8) + 1 * abs(1.0 - 0.9)) / 5
    assert ece(PROBS, ANSWERS, n_bins=5) == pytest.approx(direct)
    bins = confidence_bins(PROBS, ANSWERS, 15)
    assert ece(PROBS, ANSWERS) == pytest.approx(sum(b.count * abs(b.accuracy - b.confidence) for b in bins) / 5)
    assert sum(b.count for b in bins) == len(PROBS)


def test_zero_confidence_goes_to_the_first_bin():
    assert confidence_bins(np.zeros((1, 3)), np.array([0]), 10) == [ConfidenceBin(0.0, 1.0, 1)]


def test_write_csv_writes_header_then_rows(tmp_path):
    write_csv(tmp_path / "plot.csv", ["confidence", "accuracy", "n_examples"], [["0.500000", "1.000000", 2]])
    with (tmp_path / "plot.csv").open(newline="") as handle:
        assert list(csv.reader(handle)) == [["confidence", "accuracy", "n_examples"], ["0.500000", "1.000000", "2"]]
