"""Multiple-choice metrics on predicted probabilities: accuracy, NLL, ECE, mean entropy; masked softmax.

Pure numpy, shared by `probe`, `label` and the student trainer. Probabilities are (n_examples, n_slots) with
zeros beyond each example's choices; `answers` (n_examples,) index into the slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ECE_BINS = 15
PROB_FLOOR = 1e-12  # NLL of a gold answer given probability 0 would be inf; clip like scikit-learn's log_loss


def masked_softmax(logits: np.ndarray, valid: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over the valid slots only; invalid slots (NaN or any value) get probability 0.

    logits, valid: (..., n_slots). float64 inside: letter logits of large teachers reach |x| > 80.
    """
    scaled = np.where(valid, np.asarray(logits, dtype=np.float64) / temperature, -np.inf)
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.where(valid, np.exp(scaled), 0.0)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def accuracy(probs: np.ndarray, answers: np.ndarray) -> float:
    """Share of examples whose most probable option is the gold answer (ties go to the first option)."""
    return float(np.mean(np.argmax(probs, axis=-1) == answers))


def nll(probs: np.ndarray, answers: np.ndarray) -> float:
    """Mean negative log-probability of the gold answer (natural log)."""
    gold = np.take_along_axis(np.asarray(probs, dtype=np.float64), answers[:, None], axis=-1)[:, 0]
    return float(-np.mean(np.log(np.clip(gold, PROB_FLOOR, None))))


@dataclass(frozen=True)
class ConfidenceBin:
    """One non-empty confidence bin: mean top confidence, accuracy of the top prediction, number of examples.

    A dataclass, not a NamedTuple: a tuple field named `count` would shadow `tuple.count`.
    """

    confidence: float
    accuracy: float
    count: int


def confidence_bins(probs: np.ndarray, answers: np.ndarray, n_bins: int) -> list[ConfidenceBin]:
    """The non-empty of `n_bins` equal-width bins of top-prediction confidence, in increasing order.

    Bin b holds confidences in (b/n_bins, (b+1)/n_bins]; a confidence of exactly 0 goes to the first bin.
    float64 throughout, so ECE and the calibration plot bin every example alike.
    """
    confidence = np.max(probs, axis=-1).astype(np.float64)  # (n_examples,)
    correct = (np.argmax(probs, axis=-1) == answers).astype(np.float64)  # (n_examples,)
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    return [
        ConfidenceBin(float(confidence[in_bin].mean()), float(correct[in_bin].mean()), int(in_bin.sum()))
        for in_bin in (bins == b for b in range(n_bins))
        if in_bin.any()
    ]


def ece(probs: np.ndarray, answers: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top prediction over `n_bins` equal-width confidence bins."""
    total = 0.0
    for b in confidence_bins(probs, answers, n_bins):  # summed bin by bin, in order: the same float every time
        total += b.count * abs(b.accuracy - b.confidence)
    return float(total / len(probs))


def mean_entropy(probs: np.ndarray) -> float:
    """Mean Shannon entropy (nats) of each example's distribution; 0 log 0 = 0."""
    p = np.asarray(probs, dtype=np.float64)
    return float(np.mean(-np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)))


def summary(probs: np.ndarray, answers: np.ndarray) -> dict[str, float]:
    """{acc, nll, ece, entropy} of one set of predictions."""
    return {
        "acc": accuracy(probs, answers),
        "nll": nll(probs, answers),
        "ece": ece(probs, answers),
        "entropy": mean_entropy(probs),
    }


def best_layer_index(cv_acc: list[float], layers: list[int]) -> int:
    """Index of the best cross-validated accuracy; ties go to the shallower layer."""
    return min(range(len(layers)), key=lambda index: (-cv_acc[index], layers[index]))
