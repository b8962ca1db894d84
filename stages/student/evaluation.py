"""Evaluating a student: on the option letters (probabilities, final metrics, plot data) and, on test, by cloze
(each option's text scored as the continuation of the question without options, as the teacher's cloze readout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.core.metrics import confidence_bins, masked_softmax, summary
from stages.core.plot_data import write_csv
from stages.modeling.cloze import ClozeScorer, normalised, score_examples
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


@torch.no_grad()
def cloze_log_likelihoods(model: Any, encoded: EncodedSplit, tokenizer: Any, batch_size: int) -> np.ndarray:
    """(n_examples, MAX_CHOICES) float32 option log-likelihoods, NaN beyond each example's choices."""
    assert encoded.cloze is not None  # load_evaluation encodes the test split's cloze sequences
    was_training = model.training
    model.eval()
    # Right padding, as the letter readout: position ids stay those of the unpadded sequence whatever the model.
    scorer = ClozeScorer(model, tokenizer.pad_token_id, "right")
    scores = score_examples(scorer, encoded.cloze, 0, encoded.n_examples, batch_size)
    model.train(was_training)
    return scores


def final_metrics(
    model: Any, evaluation: dict[str, EncodedSplit], readout: LetterReadout, batch_size: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """({val,test}_{acc,nll,ece,entropy} and test_cloze_acc, test_cloze_norm_acc of the trained student, its
    predicted option per test question by each readout: letter, cloze, cloze_norm)."""
    metrics, predictions = {}, {}
    for name, encoded in evaluation.items():
        probs = evaluate(model, encoded, readout, batch_size)
        metrics.update({f"{name}_{key}": value for key, value in summary(probs, encoded.answers).items()})
        if encoded.cloze is not None:
            scores = cloze_log_likelihoods(model, encoded, readout.tokenizer, batch_size)
            predictions = {
                "letter": np.argmax(probs, axis=-1),
                "cloze": np.argmax(masked_softmax(scores, encoded.valid), axis=-1),
                "cloze_norm": np.argmax(masked_softmax(normalised(scores, encoded.cloze), encoded.valid), axis=-1),
            }
            for kind in ("cloze", "cloze_norm"):
                metrics[f"{name}_{kind}_acc"] = float(np.mean(predictions[kind] == encoded.answers))
    return metrics, predictions


def write_plots(out: Path, model: Any, test: EncodedSplit, readout: LetterReadout, batch_size: int) -> None:
    """calibration.csv (confidence bin -> accuracy) and confusion.csv (gold letter, predicted letter) on test."""
    probs = evaluate(model, test, readout, batch_size)
    calibration = [[b.confidence, b.accuracy, b.count] for b in confidence_bins(probs, test.answers, CALIBRATION_BINS)]
    write_csv(out / "calibration.csv", ["confidence", "accuracy", "n_examples"], calibration)
    confusion = ([LETTERS[a], LETTERS[p]] for a, p in zip(test.answers, probs.argmax(-1), strict=True))
    write_csv(out / "confusion.csv", ["actual", "predicted"], confusion)
