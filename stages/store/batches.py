"""Tokenising prompts for extraction: the answer position, option-letter tokens, length-bucketed batches.

Answer position rule (`last_non_special`): prompts are tokenised with the tokenizer's own special tokens
(BOS for Llama, [CLS] ... [SEP] for BERT), because that is the input the teacher was trained on; the
answer position is the last token that is not a special token, i.e. the last token of the prompt text
(`Answer:`'s last piece), never an appended [SEP] or EOS.

Option positions (`option_line_end`): the last token of each option's line in the same prompt, found from the
tokenizer's character offsets (a slow tokenizer without offsets: the last token of the prompt's text up to there),
so any template works; -1 beyond a question's options.

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
OPTION_POSITION_RULE = "option_line_end"


@dataclass(frozen=True)
class TokenizedPrompts:
    input_ids: list[np.ndarray]  # one (seq,) int32 array per example, unpadded
    answer_index: np.ndarray  # (n_examples,) int64: the answer position within each unpadded prompt
    option_index: np.ndarray | None = None  # (n_examples, n_slots) int64: each option line's last token, -1 beyond

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
    option_position: np.ndarray | None = None  # (batch, n_slots) int64: option line ends' columns, -1 beyond
    pool_mask: np.ndarray | None = None  # (batch, seq) float32: read the mean over these tokens, not a position


def tokenize_prompts(
    tokenizer: Any, prompts: Sequence[str], example_ids: Sequence[str], chunk: int = 256,
    option_ends: Sequence[Sequence[int]] | None = None, add_special_tokens: bool = True,
) -> TokenizedPrompts:  # fmt: skip
    """Every prompt's tokens and answer position; with `option_ends` (character offsets just past each option's
    line, `option_line_ends`), each option line's last token too."""
    # Chunks, kept as int32 arrays: a fast tokenizer's batch output (tokens, offsets, masks per token) for a
    # whole split would otherwise be the one thing in memory that grows with the number of examples.
    input_ids: list[np.ndarray] = []
    answer_index = np.empty(len(prompts), dtype=np.int64)
    offsets = option_ends is not None and bool(getattr(tokenizer, "is_fast", False))
    n_slots = max((len(ends) for ends in option_ends), default=0) if option_ends is not None else 0
    option_index = np.full((len(prompts), n_slots), -1, dtype=np.int64)
    for first in range(0, len(prompts), chunk):
        encoded = tokenizer(
            list(prompts[first : first + chunk]), add_special_tokens=add_special_tokens,
            return_special_tokens_mask=True, return_offsets_mapping=offsets,
        )  # fmt: skip
        for offset, (ids, special) in enumerate(zip(encoded["input_ids"], encoded["special_tokens_mask"], strict=True)):
            example = first + offset
            content = np.flatnonzero(np.asarray(special) == 0)
            if content.size == 0:
                raise InputError(f"example {example_ids[example]}: its prompt tokenises to special tokens only")
            answer_index[example] = content[-1]
            input_ids.append(np.asarray(ids, dtype=np.int32))
            if option_ends is None:
                continue
            ends = option_ends[example]
            if offsets:
                starts = np.array([span[0] for span in encoded["offset_mapping"][offset]])[content]
                option_index[example, : len(ends)] = content[np.searchsorted(starts, ends, side="left") - 1]
            else:
                option_index[example, : len(ends)] = [
                    prefix_end(tokenizer, prompts[example][:end], example_ids[example], add_special_tokens)
                    for end in ends
                ]
    return TokenizedPrompts(input_ids, answer_index, option_index if option_ends is not None else None)


def prefix_end(tokenizer: Any, prefix: str, example_id: str, add_special_tokens: bool = True) -> int:
    """Index of the last non-special token of `prefix` encoded alone (tokenizers without character offsets)."""
    encoded = tokenizer(prefix, add_special_tokens=add_special_tokens, return_special_tokens_mask=True)
    content = np.flatnonzero(np.asarray(encoded["special_tokens_mask"]) == 0)
    if content.size == 0:
        raise InputError(f"example {example_id}: the text before an option's end tokenises to special tokens only")
    return int(content[-1])


def shard_batches(lengths: np.ndarray, start: int, stop: int, batch_size: int) -> list[np.ndarray]:
    """Example indices of [start, stop) cut into batches of similar length (stable sort: deterministic)."""
    return length_batches(lengths, start, stop, batch_size)


def collate(tokens: TokenizedPrompts, rows: np.ndarray, pad_id: int, padding_side: str) -> Batch:
    """Pad the rows' prompts on the tokenizer's side; answer positions and position ids follow the padding."""
    input_ids, attention_mask, position_ids, offsets = pad_rows(tokens.input_ids, rows, pad_id, padding_side)
    answer_position = offsets + tokens.answer_index[rows]
    option_position = None
    if tokens.option_index is not None:
        index = tokens.option_index[rows]  # (batch, n_slots)
        option_position = np.where(index >= 0, offsets[:, None] + index, -1)
    return Batch(rows, input_ids, attention_mask, position_ids, answer_position, option_position)
