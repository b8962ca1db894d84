"""Evaluating a student on the option letters: probabilities, final metrics, plot data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.core.metrics import confidence_bins, masked_softmax, summary
from stages.core.plot_data import write_csv
from stages.sources.prompts import LETTERS
from stages.student.data import EncodedSplit
from stages.student.model import LetterReadout, forward_letters

CALIBRATION_BINS = 10  # the calibration plot's bins (coarser than ECE's: a test split is small)


@torch.no_grad()
def letter_logits(model: Any, encoded: EncodedSplit, readout: LetterReadout, batch_size: int) -> np.ndarray:
    """(n_examples, MAX_CHOICES) float32 raw letter logits at the answer position, in split order."""
    was_training = model.training
    model.eval()
    blocks = []
    for start in range(0, encoded.n_examples, batch_size):
        logits, _ = forward_letters(model, encoded.token_ids[start : start + batch_size], readout)
        blocks.append(logits.float().cpu().numpy())  # (batch, MAX_CHOICES)
    model.train(was_training)
    return np.concatenate(blocks) if blocks else np.zeros((0, len(readout.letter_ids)), dtype=np.float32)


def evaluate(model: Any, encoded: EncodedSplit, readout: LetterReadout, batch_size: int) -> np.ndarray:
    """(n_examples, MAX_CHOICES) probabilities over the valid letters (0 on invalid slots)."""
    return masked_softmax(letter_logits(model, encoded, readout, batch_size), encoded.valid)


def final_metrics(
    model: Any, evaluation: dict[str, EncodedSplit], readout: LetterReadout, batch_size: int
) -> dict[str, float]:
    """{val,test}_{acc,nll,ece,entropy} of the trained student."""
    metrics = {}
    for name, encoded in evaluation.items():
        probs = evaluate(model, encoded, readout, batch_size)
        metrics.update({f"{name}_{key}": value for key, value in summary(probs, encoded.answers).items()})
    return metrics


def write_plots(out: Path, model: Any, test: EncodedSplit, readout: LetterReadout, batch_size: int) -> None:
    """calibration.csv (confidence bin -> accuracy) and confusion.csv (gold letter, predicted letter) on test."""
    probs = evaluate(model, test, readout, batch_size)
    calibration = [[b.confidence, b.accuracy, b.count] for b in confidence_bins(probs, test.answers, CALIBRATION_BINS)]
    write_csv(out / "calibration.csv", ["confidence", "accuracy", "n_examples"], calibration)
    confusion = ([LETTERS[a], LETTERS[p]] for a, p in zip(test.answers, probs.argmax(-1), strict=True))
    write_csv(out / "confusion.csv", ["actual", "predicted"], confusion)
