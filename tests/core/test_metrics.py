import math

import numpy as np
import pytest

from stages.core.metrics import accuracy, ece, masked_softmax, mean_entropy, nll, summary

PROBS = np.array([[0.7, 0.3, 0.0], [0.2, 0.5, 0.3], [0.9, 0.1, 0.0], [0.25, 0.25, 0.5]])
ANSWERS = np.array([0, 2, 1, 2])


def test_accuracy_counts_argmax_hits():
    assert accuracy(PROBS, ANSWERS) == pytest.approx(0.5)


def test_nll_is_mean_negative_log_gold():
    expected = -(math.log(0.7) + math.log(0.3) + math.log(0.1) + math.log(0.5)) / 4
    assert nll(PROBS, ANSWERS) == pytest.approx(expected)


def test_nll_of_zero_probability_is_finite():
    assert np.isfinite(nll(np.array([[1.0, 0.0]]), np.array([1])))


def test_ece_by_hand():
    # confidences 0.7 (bin 10, right), 0.5 (bin 7, wrong), 0.9 (bin 13, wrong), 0.5 (bin 7, right)
    # bin 7: acc 0.5, conf 0.5 -> 0; bin 10: |1 - 0.7| = 0.3; bin 13: |0 - 0.9| = 0.9
    assert ece(PROBS, ANSWERS) == pytest.approx((0.3 + 0.9) / 4)


def test_ece_bin_edges_are_right_closed():
    # 0.6 = 9/15 closes bin (8/15, 9/15] with 0.55: acc 0.5, mean conf 0.575 -> 0.075 (0.475 if split)
    probs = np.array([[0.6, 0.4], [0.55, 0.45]])
    assert ece(probs, np.array([0, 1])) == pytest.approx(0.075)


def test_perfectly_calibrated_is_zero():
    probs = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert ece(probs, np.array([0, 1])) == pytest.approx(0.0)


def test_mean_entropy_ignores_zero_slots():
    expected = (-(0.7 * math.log(0.7) + 0.3 * math.log(0.3)) + math.log(2)) / 2
    assert mean_entropy(np.array([[0.7, 0.3, 0.0], [0.5, 0.5, 0.0]])) == pytest.approx(expected)


def test_masked_softmax_zeroes_invalid_and_handles_nan():
    logits = np.array([[1.0, 2.0, np.nan], [100.0, 0.0, 3.0]])
    valid = np.array([[True, True, False], [True, True, True]])
    probs = masked_softmax(logits, valid)
    assert probs[0, 2] == 0.0
    assert probs[0, :2] == pytest.approx(np.exp([1, 2]) / np.exp([1, 2]).sum(), rel=1e-6)
    assert probs.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert masked_softmax(logits, valid, temperature=2.0)[0, :2] == pytest.approx(
        np.exp([0.5, 1]) / np.exp([0.5, 1]).sum(), rel=1e-6
    )


def test_summary_keys():
    assert set(summary(PROBS, ANSWERS)) == {"acc", "nll", "ece", "entropy"}
