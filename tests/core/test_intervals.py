"""Bootstrap intervals (stages/core/intervals.py): coverage of known synthetic classifiers, pairing, PGR."""

from __future__ import annotations

import numpy as np
import pytest

from stages.core.intervals import (
    accuracy_interval,
    difference_interval,
    performance_gap_recovered,
    resample_indices,
)

N_QUESTIONS, N_TRIALS = 200, 300
# The coverage of N_TRIALS independent 95% intervals is binomial: sd = sqrt(0.95 * 0.05 / 300) = 0.013. The
# percentile bootstrap of a proportion undercovers slightly at this n (about 0.94), so the band is [0.91, 0.98].
BAND = (0.91, 0.98)


def test_the_accuracy_interval_covers_the_true_accuracy_at_the_nominal_rate():
    rng = np.random.default_rng(1)
    true_accuracy, covered = 0.7, 0
    for trial in range(N_TRIALS):
        correct = rng.random(N_QUESTIONS) < true_accuracy  # a classifier right on each question w.p. 0.7
        _, low, high = accuracy_interval(correct, resample_indices(N_QUESTIONS, seed=trial))
        covered += low <= true_accuracy <= high
    assert BAND[0] <= covered / N_TRIALS <= BAND[1]


def test_the_paired_difference_interval_covers_the_true_difference_and_is_narrow():
    rng = np.random.default_rng(2)
    covered, widths, unpaired_widths = 0, [], []
    for trial in range(N_TRIALS):
        # A difficulty shared by both models (their errors are correlated); they disagree on 20% of the questions.
        # (With far fewer disagreements, e.g. 5%, the percentile interval of the difference undercovers: about 0.91.)
        difficulty = rng.random(N_QUESTIONS)
        better = difficulty < 0.75  # true accuracy 0.75
        worse = (difficulty < 0.62) | ((difficulty >= 0.75) & (difficulty < 0.82))  # 0.69: difference 0.06
        indices = resample_indices(N_QUESTIONS, seed=trial)
        difference, low, high = difference_interval(better, [worse], indices)
        assert difference == pytest.approx(better.mean() - worse.mean())
        covered += low <= 0.06 <= high
        widths.append(high - low)
        if trial < 50:  # enough to compare widths; the unpaired intervals are the slow part
            a, b = accuracy_interval(better, indices), accuracy_interval(worse, indices)
            unpaired_widths.append(np.hypot(a[2] - a[1], b[2] - b[1]))
    assert BAND[0] <= covered / N_TRIALS <= BAND[1]
    assert np.mean(widths) < 0.8 * np.mean(unpaired_widths)  # pairing removes the shared question difficulty


def test_the_best_of_several_is_taken_inside_every_resample():
    rng = np.random.default_rng(3)
    probe = rng.random(200) < 0.8
    readouts = [rng.random(200) < 0.6, rng.random(200) < 0.62]
    indices = resample_indices(200)
    difference, low, high = difference_interval(probe, readouts, indices)
    assert difference == pytest.approx(probe.mean() - max(r.mean() for r in readouts))
    single = [difference_interval(probe, [r], indices) for r in readouts]
    assert low <= min(s[1] for s in single) and high <= min(s[2] for s in single) + 1e-12


def test_intervals_are_deterministic_and_contain_the_estimate():
    correct = np.random.default_rng(4).random(100) < 0.5
    first = accuracy_interval(correct, resample_indices(100))
    assert first == accuracy_interval(correct, resample_indices(100))
    assert first[1] <= first[0] <= first[2]
    assert accuracy_interval(np.ones(50, bool), resample_indices(50)) == (1.0, 1.0, 1.0)


def test_pgr_is_zero_for_gold_one_for_the_oracle_and_undefined_without_a_gap():
    assert performance_gap_recovered(0.6, gold=0.6, oracle=0.9) == 0.0
    assert performance_gap_recovered(0.9, gold=0.6, oracle=0.9) == 1.0
    assert performance_gap_recovered(0.75, gold=0.6, oracle=0.9) == pytest.approx(0.5)
    assert performance_gap_recovered(0.5, gold=0.6, oracle=0.9) == pytest.approx(-1 / 3)
    assert performance_gap_recovered(0.7, gold=0.6, oracle=0.6) is None
