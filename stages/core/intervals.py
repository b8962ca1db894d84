"""Percentile bootstrap intervals over test questions, for accuracies and (paired) for their differences.

Every interval of one summary resamples the same `N_RESAMPLES` sets of question indices (fixed seed, so the same
inputs give the same numbers). A difference between two readouts is therefore resampled question by question
(a paired bootstrap): it keeps the correlation between two models answering the same questions, which is why a
difference's interval is usually much narrower than the two accuracies' intervals side by side suggest.
"""

from __future__ import annotations

import numpy as np

N_RESAMPLES = 2000
SEED = 0
LEVEL = 0.95


def resample_indices(n_questions: int, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(n_resamples, n_questions) question indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n_questions, size=(n_resamples, n_questions), dtype=np.int32)


def resampled_accuracy(correct: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(n_resamples,) accuracy on each resample; `correct` (n_questions,) bool."""
    return np.asarray(correct, dtype=bool)[indices].mean(axis=1)


def percentile_interval(resampled: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` interval of a statistic's bootstrap distribution."""
    tail = (1.0 - level) / 2
    low, high = np.quantile(resampled, [tail, 1.0 - tail])
    return float(low), float(high)


def accuracy_interval(correct: np.ndarray, indices: np.ndarray) -> tuple[float, float, float]:
    """(accuracy, low, high) of one readout."""
    return (float(np.mean(correct)), *percentile_interval(resampled_accuracy(correct, indices)))


def difference_interval(
    correct: np.ndarray, others: list[np.ndarray], indices: np.ndarray
) -> tuple[float, float, float]:
    """(difference, low, high) of accuracy(correct) - max over `others` of their accuracy, paired.

    With one other readout this is a plain paired difference. With several, the best of them is taken inside every
    resample, so the interval accounts for having picked the best on the same questions.
    """
    point = float(np.mean(correct)) - max(float(np.mean(other)) for other in others)
    best = np.max([resampled_accuracy(other, indices) for other in others], axis=0)
    return (point, *percentile_interval(resampled_accuracy(correct, indices) - best))


def performance_gap_recovered(arm: float, gold: float, oracle: float) -> float | None:
    """(arm - gold) / (oracle - gold): 0 for gold, 1 for the oracle; None when the oracle does not beat gold."""
    if oracle <= gold:
        return None
    return (arm - gold) / (oracle - gold)
