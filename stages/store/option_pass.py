"""Per-option states of an encoder teacher: each (question, option) pair encoded as a sequence pair, the way
multiple-choice heads read encoders (BERT's `ForMultipleChoice`: `[CLS] question [SEP] option [SEP]`), every
layer's representation read at `extract.option_pooling`: `cls` (the first token), `mean` (over the pair's
non-special tokens) or `last` (its last non-special token).

Decoder teachers need no extra pass: their option states come from the lettered prompt's own forward (the end of
each option's line, stages/store/forward.py). Sequences are question-major and length-bucketed inside a store
shard only, like the cloze readout, so a shard's values do not depend on the other shards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stages.core.errors import InputError
from stages.modeling.batching import length_batches, pad_rows
from stages.store.batches import Batch

POOLINGS = ("cls", "mean", "last")


@dataclass(frozen=True)
class PairTokens:
    """Every (question, option) pair of a split, question-major: question i owns first[i]..first[i+1]-1."""

    input_ids: list[np.ndarray]  # one (seq,) int64 array per pair, special tokens included
    content: list[np.ndarray]  # one (seq,) int64 array per pair: 1 on non-special tokens
    read_index: np.ndarray  # (n_pairs,) int64: the position read (cls: 0; last: the last non-special token)
    example: np.ndarray  # (n_pairs,) int64
    option: np.ndarray  # (n_pairs,) int64
    first: np.ndarray  # (n_examples + 1,) int64
    pooling: str

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.input_ids], dtype=np.int64)


def tokenize_pairs(
    tokenizer: Any, questions: Sequence[str], choices: Sequence[Sequence[str]], pooling: str, ids: Sequence[str]
) -> PairTokens:
    """Every question's options as sequence pairs in `tokenizer`'s tokens (`ids` name questions in errors)."""
    n_choices = np.array([len(options) for options in choices], dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(n_choices)]).astype(np.int64)
    example = np.repeat(np.arange(len(choices)), n_choices)
    option = np.arange(len(example)) - first[example]
    encoded = tokenizer(
        [questions[int(i)] for i in example], [text for options in choices for text in options],
        add_special_tokens=True, return_special_tokens_mask=True,
    )  # fmt: skip
    input_ids, content, read_index = [], [], np.zeros(len(example), dtype=np.int64)
    for pair, (tokens, special) in enumerate(zip(encoded["input_ids"], encoded["special_tokens_mask"], strict=True)):
        mask = (np.asarray(special) == 0).astype(np.int64)
        if not mask.any():
            raise InputError(f"example {ids[example[pair]]}: option {option[pair]} pair tokenises to special tokens")
        input_ids.append(np.asarray(tokens, dtype=np.int64))
        content.append(mask)
        read_index[pair] = 0 if pooling == "cls" else int(np.flatnonzero(mask)[-1])
    return PairTokens(input_ids, content, read_index, example, option, first, pooling)


def collate_pairs(tokens: PairTokens, rows: np.ndarray, pad_id: int, padding_side: str) -> Batch:
    """A Batch of pairs `rows`: read at one position each, or (mean) pooled over their non-special tokens."""
    input_ids, attention_mask, position_ids, offsets = pad_rows(tokens.input_ids, rows, pad_id, padding_side)
    pool = None
    if tokens.pooling == "mean":
        pool = pad_rows(tokens.content, rows, 0, padding_side)[0].astype(np.float32)
    return Batch(rows, input_ids, attention_mask, position_ids, offsets + tokens.read_index[rows], pool_mask=pool)


def pair_states(
    gather: Any, tokens: PairTokens, start: int, stop: int, n_slots: int, batch_size: int, pad: tuple[int, str]
) -> np.ndarray:
    """(stop - start, n_layers, n_slots, d_model) float32 pair states of questions [start, stop), zeros beyond."""
    first, last = int(tokens.first[start]), int(tokens.first[stop])
    n_layers, d_model = len(gather.layers), gather.backbone.config.hidden_size
    states = np.zeros((stop - start, n_slots, n_layers, d_model), dtype=np.float32)
    for rows in length_batches(tokens.lengths, first, last, batch_size):
        hidden, _, _ = gather(collate_pairs(tokens, rows, *pad))  # (batch, n_layers, d_model)
        states[tokens.example[rows] - start, tokens.option[rows]] = hidden.cpu().numpy()
    return states.transpose(0, 2, 1, 3)  # (examples, n_layers, n_slots, d_model)
