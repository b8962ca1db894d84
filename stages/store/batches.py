"""Tokenising prompts for extraction: the answer position, option-letter tokens, length-bucketed batches.

Answer position rule (`last_non_special`): prompts are tokenised with the tokenizer's own special tokens
(BOS for Llama, [CLS] ... [SEP] for BERT), because that is the input the teacher was trained on; the
answer position is the last token that is not a special token, i.e. the last token of the prompt text
(`Answer:`'s last piece), never an appended [SEP] or EOS.

Batches never cross a shard: each shard's examples are sorted by length and cut into batches, so a shard's
values do not depend on which process computes it or whether the run was resumed (byte-identical stores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stages.core.errors import InputError
from stages.modeling.batching import length_batches, pad_rows

POSITION_RULE = "last_non_special"


@dataclass(frozen=True)
class TokenizedPrompts:
    input_ids: list[np.ndarray]  # one (seq,) int32 array per example, unpadded
    answer_index: np.ndarray  # (n_examples,) int64: the answer position within each unpadded prompt

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.input_ids], dtype=np.int64)


@dataclass(frozen=True)
class Batch:
    rows: np.ndarray  # (batch,) int64: example indices in store order (sorted by length inside a shard)
    input_ids: np.ndarray  # (batch, seq) int64
    attention_mask: np.ndarray  # (batch, seq) int64
    position_ids: np.ndarray  # (batch, seq) int64: positions as if each row were unpadded
    answer_position: np.ndarray  # (batch,) int64: column of each row's answer token in the padded batch


def tokenize_prompts(
    tokenizer: Any, prompts: Sequence[str], example_ids: Sequence[str], chunk: int = 256
) -> TokenizedPrompts:
    # Chunks, kept as int32 arrays: a fast tokenizer's batch output (tokens, offsets, masks per token) for a
    # whole split would otherwise be the one thing in memory that grows with the number of examples.
    input_ids: list[np.ndarray] = []
    answer_index = np.empty(len(prompts), dtype=np.int64)
    for first in range(0, len(prompts), chunk):
        encoded = tokenizer(
            list(prompts[first : first + chunk]), add_special_tokens=True, return_special_tokens_mask=True
        )
        for offset, (ids, special) in enumerate(zip(encoded["input_ids"], encoded["special_tokens_mask"], strict=True)):
            content = np.flatnonzero(np.asarray(special) == 0)
            if content.size == 0:
                raise InputError(f"example {example_ids[first + offset]}: its prompt tokenises to special tokens only")
            answer_index[first + offset] = content[-1]
            input_ids.append(np.asarray(ids, dtype=np.int32))
    return TokenizedPrompts(input_ids=input_ids, answer_index=answer_index)


def shard_batches(lengths: np.ndarray, start: int, stop: int, batch_size: int) -> list[np.ndarray]:
    """Example indices of [start, stop) cut into batches of similar length (stable sort: deterministic)."""
    return length_batches(lengths, start, stop, batch_size)


def collate(tokens: TokenizedPrompts, rows: np.ndarray, pad_id: int, padding_side: str) -> Batch:
    """Pad the rows' prompts on the tokenizer's side; answer positions and position ids follow the padding."""
    input_ids, attention_mask, position_ids, offsets = pad_rows(tokens.input_ids, rows, pad_id, padding_side)
    answer_position = offsets + tokens.answer_index[rows]
    return Batch(rows, input_ids, attention_mask, position_ids, answer_position)
