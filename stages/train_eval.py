"""Evaluating a student on the option letters: probabilities, final metrics, plot data."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.metrics import masked_softmax, summary
from stages.student_data import EncodedSplit
from stages.student_model import forward_letters


@torch.no_grad()
def letter_logits(
    model: Any, encoded: EncodedSplit, pad_id: int, letter_ids: torch.Tensor, batch_size: int
) -> np.ndarray:
    """(n_examples, MAX_CHOICES) float32 raw letter logits at the answer position, in split order."""
    was_training = model.training
    model.eval()
    blocks = []
    for start in range(0, encoded.n_examples, batch_size):
        logits, _ = forward_letters(model, encoded.token_ids[start : start + batch_size], pad_id, letter_ids)
        blocks.append(logits.float().cpu().numpy())  # (batch, MAX_CHOICES)
    model.train(was_training)
    return np.concatenate(blocks) if blocks else np.zeros((0, len(letter_ids)), dtype=np.float32)


def evaluate(model: Any, encoded: EncodedSplit, pad_id: int, letter_ids: torch.Tensor, batch_size: int) -> np.ndarray:
    """(n_examples, MAX_CHOICES) probabilities over the valid letters (0 on invalid slots)."""
    return masked_softmax(letter_logits(model, encoded, pad_id, letter_ids, batch_size), encoded.valid)


def final_metrics(
    model: Any, evaluation: dict[str, EncodedSplit], pad_id: int, letter_ids: torch.Tensor, batch_size: int
) -> dict[str, float]:
    """{val,test}_{acc,nll,ece,entropy} of the trained student."""
    metrics = {}
    for name, encoded in evaluation.items():
        probs = evaluate(model, encoded, pad_id, letter_ids, batch_size)
        metrics.update({f"{name}_{key}": value for key, value in summary(probs, encoded.answers).items()})
    return metrics


def write_plots(
    out: Path, model: Any, test: EncodedSplit, pad_id: int, letter_ids: torch.Tensor, batch_size: int, n_bins: int = 10
) -> None:
    """calibration.csv (confidence bin -> accuracy) and confusion.csv (gold letter, predicted letter) on test."""
    from stages.prompts import LETTERS

    probs = evaluate(model, test, pad_id, letter_ids, batch_size)
    confidence, predicted = probs.max(-1), probs.argmax(-1)
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    with (out / "calibration.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["confidence", "accuracy", "n_examples"])
        for b in range(n_bins):
            members = bins == b
            if members.any():
                writer.writerow(
                    [
                        f"{confidence[members].mean():.6f}",
                        f"{np.mean(predicted[members] == test.answers[members]):.6f}",
                        int(members.sum()),
                    ]
                )
    with (out / "confusion.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["actual", "predicted"])
        writer.writerows([LETTERS[a], LETTERS[p]] for a, p in zip(test.answers, predicted, strict=True))
