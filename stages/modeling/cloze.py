"""Cloze scoring, as the lm-evaluation-harness scores ARC: the log-likelihood of each option's text as the
continuation of the question with the options hidden. One implementation for the teacher (extract) and every
student (its test-set cloze accuracy), so both are scored alike.

- context: `prompt.cloze_template` filled with the question (no options), e.g. "{question}\\nAnswer:";
  continuation: " " + the option's text (lm-eval's target delimiter). Trailing whitespace of the context moves
  to the continuation, as lm-eval does.
- tokens: context and continuation encoded separately (the context with the tokenizer's special tokens, minus
  trailing ones such as an appended EOS; the continuation without any), continuation tokens appended. Every
  option of a question thus has the same context tokens, and the boundary sits where lm-eval puts it.
- score: the sum over continuation tokens of log p(token | every token before it). `cloze_norm` divides it by
  the option text's length in characters (lm-eval's acc_norm).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stages.core.errors import InputError
from stages.modeling.batching import length_batches, pad_rows
from stages.sources.prompts import MAX_CHOICES

DELIMITER = " "
RULE = "lm_eval: context and delimiter + option encoded apart, summed log-likelihood; norm per option character"


@dataclass(frozen=True)
class ClozeTokens:
    """Every (question, option) sequence of a split, question-major: question i owns first[i]..first[i+1]-1."""

    input_ids: list[np.ndarray]  # one (seq,) int64 array per sequence: context then continuation tokens
    n_continuation: np.ndarray  # (n_sequences,) int64: continuation tokens at the end of each sequence
    example: np.ndarray  # (n_sequences,) int64: the question of each sequence
    option: np.ndarray  # (n_sequences,) int64: the option slot of each sequence
    first: np.ndarray  # (n_examples + 1,) int64
    option_chars: np.ndarray  # (n_examples, MAX_CHOICES) float64: characters of each option's text, NaN beyond

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.input_ids], dtype=np.int64)


def split_context(question: str, template: str) -> tuple[str, str]:
    """(context, whitespace moved to the continuation): lm-eval's rule for a context ending in spaces."""
    context = template.format(question=question)
    stripped = context.rstrip()
    return stripped, context[len(stripped) :]


def context_ids(encoded: list[int], special: list[int], example_id: str) -> np.ndarray:
    """The context's tokens up to its last non-special token (a trailing EOS or [SEP] would split it off)."""
    content = np.flatnonzero(np.asarray(special) == 0)
    if content.size == 0:
        raise InputError(f"example {example_id}: its cloze context tokenises to special tokens only")
    return np.asarray(encoded[: content[-1] + 1], dtype=np.int64)


def tokenize_cloze(
    tokenizer: Any, questions: Sequence[str], choices: Sequence[Sequence[str]], template: str, ids: Sequence[str]
) -> ClozeTokens:
    """Every question's options as cloze sequences in `tokenizer`'s tokens (`ids` name questions in errors)."""
    n_choices = np.array([len(options) for options in choices], dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(n_choices)]).astype(np.int64)
    example = np.repeat(np.arange(len(choices)), n_choices)  # (n_sequences,)
    if not len(example):
        return ClozeTokens([], np.zeros(0, np.int64), example, example, first, np.zeros((0, MAX_CHOICES)))
    contexts, spaces = zip(*(split_context(question, template) for question in questions), strict=True)
    encoded = tokenizer(list(contexts), add_special_tokens=True, return_special_tokens_mask=True)
    masks = zip(encoded["input_ids"], encoded["special_tokens_mask"], strict=True)
    context = [context_ids(tokens, special, ids[i]) for i, (tokens, special) in enumerate(masks)]
    continuations = [spaces[i] + DELIMITER + text for i, options in enumerate(choices) for text in options]
    pieces = tokenizer(continuations, add_special_tokens=False)["input_ids"]
    option = np.arange(len(example)) - first[example]
    for sequence in np.flatnonzero([not piece for piece in pieces])[:1]:  # the first empty one, if any
        raise InputError(f"example {ids[example[sequence]]}: option {option[sequence]} tokenises to nothing")
    input_ids = [
        np.concatenate([context[i], np.asarray(p, dtype=np.int64)]) for i, p in zip(example, pieces, strict=True)
    ]
    n_continuation = np.array([len(piece) for piece in pieces], dtype=np.int64)
    option_chars = np.full((len(choices), MAX_CHOICES), np.nan)
    option_chars[example, option] = [max(len(text), 1) for options in choices for text in options]  # empty: 1, not 0
    return ClozeTokens(input_ids, n_continuation, example, option, first, option_chars)


class ClozeScorer:
    """A causal LM scoring padded batches of cloze sequences: each sequence's continuation log-likelihood."""

    def __init__(self, model: Any, pad_id: int, padding_side: str) -> None:
        # A peft model forwards unknown kwargs blindly: score with the model it wraps (the adapters live inside).
        self.model = model.get_base_model() if hasattr(model, "get_base_model") else model
        accepted = inspect.signature(self.model.forward).parameters
        self.takes_position_ids = "position_ids" in accepted
        self.takes_logits_to_keep = "logits_to_keep" in accepted
        self.takes_use_cache = "use_cache" in accepted
        self.pad_id = pad_id
        # Left padding leaves a row's values unchanged only with explicit position ids; without them, pad right.
        self.padding_side = padding_side if self.takes_position_ids else "right"
        self.device = next(self.model.parameters()).device

    @torch.inference_mode()
    def __call__(self, tokens: ClozeTokens, rows: np.ndarray) -> np.ndarray:
        """(len(rows),) float64 summed log-likelihoods of the continuations of sequences `rows`."""
        input_ids, attention_mask, position_ids, offsets = pad_rows(tokens.input_ids, rows, self.pad_id,
                                                                    self.padding_side)  # fmt: skip
        n_continuation = tokens.n_continuation[rows]
        # The logits at column c predict the token at c + 1: a continuation of n tokens ending at column `end`
        # is predicted by columns end - n - 1 .. end - 2.
        first_prediction = offsets + attention_mask.sum(axis=1) - n_continuation - 1  # (batch,)
        inputs: dict[str, Any] = {
            "input_ids": torch.from_numpy(input_ids).to(self.device),
            "attention_mask": torch.from_numpy(attention_mask).to(self.device),
        }
        if self.takes_position_ids:
            inputs["position_ids"] = torch.from_numpy(position_ids).to(self.device)
        if self.takes_use_cache:
            inputs["use_cache"] = False
        if self.takes_logits_to_keep:  # the LM head on the last columns only, not on (batch, seq, vocab)
            inputs["logits_to_keep"] = input_ids.shape[1] - int(first_prediction.min())
        logits = self.model(**inputs).logits  # (batch, kept columns, vocab)
        shift = input_ids.shape[1] - logits.shape[1]  # sequence column c is logits column c - shift
        row_of = np.repeat(np.arange(len(rows)), n_continuation)  # (n_tokens,)
        column = np.concatenate([np.arange(p, p + n) for p, n in zip(first_prediction, n_continuation, strict=True)])
        targets = torch.from_numpy(input_ids[row_of, column + 1]).to(logits.device)
        picked = logits[torch.from_numpy(row_of).to(logits.device), torch.from_numpy(column - shift).to(logits.device)]
        log_probs = torch.log_softmax(picked.float(), dim=-1).gather(1, targets[:, None])[:, 0]  # (n_tokens,)
        sums = torch.zeros(len(rows), dtype=torch.float64).index_add_(
            0, torch.from_numpy(row_of), log_probs.double().cpu()
        )
        return sums.numpy()


def score_examples(scorer: ClozeScorer, tokens: ClozeTokens, start: int, stop: int, batch_size: int) -> np.ndarray:
    """(stop - start, MAX_CHOICES) float32 option log-likelihoods of questions [start, stop), NaN beyond choices.

    The questions' sequences are length-bucketed among themselves only (see batching.py), so a store shard's
    values do not depend on the other shards.
    """
    first, last = int(tokens.first[start]), int(tokens.first[stop])
    scores = np.empty(last - first, dtype=np.float64)
    for rows in length_batches(tokens.lengths, first, last, batch_size):
        scores[rows - first] = scorer(tokens, rows)
    matrix = np.full((stop - start, MAX_CHOICES), np.nan, dtype=np.float32)
    matrix[tokens.example[first:last] - start, tokens.option[first:last]] = scores
    return matrix


def normalised(log_likelihood: np.ndarray, tokens: ClozeTokens, start: int = 0) -> np.ndarray:
    """Log-likelihood per character of the option text (lm-eval's acc_norm), for questions from `start` on."""
    chars = tokens.option_chars[start : start + len(log_likelihood)]
    return (log_likelihood / chars).astype(np.float32)
