"""Every readout of the teacher, and the probe, as option probabilities on every split.

- `teacher_letter`: softmax of the option-letter logits at the answer position (options shown), temperature 1.
- `teacher_cloze`: softmax of the options' log-likelihoods as continuations of the question without options
  (lm-eval's acc), with one temperature fitted on `val` by NLL, as the probe's: these are cloze_kd's soft labels.
- `teacher_cloze_norm`: the same per character of the option text (lm-eval's acc_norm), temperature 1: a
  readout for accuracy only.
- `probe`: the probe at the layer `label` picked (calibrated, or not, by the probe stage).

A readout the stores lack (an encoder teacher; `extract.cloze: false`) is `Missing`, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.core.errors import InputError
from stages.core.metrics import accuracy, masked_softmax
from stages.sources.schema import Split
from stages.store.reader import HiddenStore

READOUTS = ("teacher_letter", "teacher_cloze", "teacher_cloze_norm", "probe")
TEACHER_READOUTS = READOUTS[:3]


@dataclass(frozen=True)
class Missing:
    """A readout the stores do not hold, and why."""

    why: str


Probabilities = dict[str, np.ndarray]  # split -> (n_examples, MAX_CHOICES), 0 beyond each example's choices
Scores = dict[str, np.ndarray]  # split -> (n_examples, MAX_CHOICES) logits or log-likelihoods, NaN beyond choices


def checked(scores: np.ndarray, split: Split, name: str, readout: str) -> np.ndarray:
    if np.isnan(scores[split.valid_mask()]).any():
        raise InputError(f"the {name} store's {readout} scores are NaN on a valid option; rerun `dvc repro extract`")
    return scores


def letter_scores(stores: dict[str, HiddenStore], splits: dict[str, Split]) -> Scores | Missing:
    """Each split's option-letter logits."""
    logits = {name: store.option_logits() for name, store in stores.items()}
    if any(value is None for value in logits.values()):
        model = next(iter(stores.values())).attrs.get("teacher", {}).get("model", "?")
        return Missing(f"teacher {model} has no LM head (encoder-only), so it has no letter outputs")
    return {name: checked(value, splits[name], name, "letter") for name, value in logits.items() if value is not None}


def cloze_scores(stores: dict[str, HiddenStore], splits: dict[str, Split], normalised: bool) -> Scores | Missing:
    """Each split's option log-likelihoods (per character if `normalised`)."""
    scores = {name: store.cloze(normalised) for name, store in stores.items()}
    for name, value in scores.items():
        if value is None:
            return Missing(stores[name].attrs.get("cloze_missing") or "the stores hold no cloze readout")
    return {name: checked(value, splits[name], name, "cloze") for name, value in scores.items() if value is not None}


def softmax_all(
    scores: Scores | Missing, splits: dict[str, Split], temperature: float = 1.0
) -> Probabilities | Missing:
    """Each split's softmax over its valid options at `temperature`; a missing readout stays missing."""
    if isinstance(scores, Missing):
        return scores
    return {name: masked_softmax(value, splits[name].valid_mask(), temperature) for name, value in scores.items()}


def fit_cloze_temperature(val_scores: np.ndarray, val: Split) -> float:
    """The temperature minimising the NLL of val's gold answers under softmax(log-likelihood / T)."""
    import torch

    from stages.probing.fit import fit_temperature

    logits = np.where(val.valid_mask(), val_scores, -np.inf)[None]  # (1, n_val, MAX_CHOICES)
    return float(fit_temperature(torch.tensor(logits, dtype=torch.float32), torch.tensor(val.answers))[0])


def teacher_readouts(
    stores: dict[str, HiddenStore], splits: dict[str, Split]
) -> tuple[dict[str, Probabilities | Missing], float | None]:
    """(every teacher readout on every split in `stores`, the cloze temperature fitted on `val` or None)."""
    cloze = cloze_scores(stores, splits, normalised=False)
    temperature = None if isinstance(cloze, Missing) else fit_cloze_temperature(cloze["val"], splits["val"])
    readouts = {
        "teacher_letter": softmax_all(letter_scores(stores, splits), splits),
        "teacher_cloze": softmax_all(cloze, splits, temperature or 1.0),
        "teacher_cloze_norm": softmax_all(cloze_scores(stores, splits, normalised=True), splits),
    }
    return readouts, temperature


def accuracies(readouts: dict[str, Probabilities | Missing], splits: dict[str, Split]) -> dict[str, dict]:
    """readouts.json: each readout's accuracy on each split (`<split>_acc`), or `available: false` and why."""
    table: dict[str, dict] = {}
    for readout, probs in readouts.items():
        if isinstance(probs, Missing):
            table[readout] = {"available": False, "why": probs.why}
        else:
            table[readout] = {f"{name}_acc": accuracy(probs[name], split.answers) for name, split in splits.items()}
    return table


def predictions(readouts: dict[str, Probabilities | Missing], name: str) -> dict[str, np.ndarray | None]:
    """Each readout's predicted option on split `name` (None: unavailable), for stages/core/predictions.py."""
    return {readout: None if isinstance(probs, Missing) else np.argmax(probs[name], axis=-1)
            for readout, probs in readouts.items()}  # fmt: skip
