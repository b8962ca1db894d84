"""Length-bucketed batches of token sequences and their padding: shared by extraction and cloze scoring.

Batches never cross a range (a store shard): the range's sequences are sorted by length and cut into batches,
so the values computed for a range do not depend on which process computes it or whether a run was resumed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def length_batches(lengths: np.ndarray, start: int, stop: int, batch_size: int) -> list[np.ndarray]:
    """Indices of [start, stop) cut into batches of similar length (stable sort: deterministic)."""
    order = start + np.argsort(lengths[start:stop], kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_rows(
    sequences: Sequence[np.ndarray], rows: np.ndarray, pad_id: int, padding_side: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids, attention_mask, position_ids, offsets) of `rows`' sequences padded on `padding_side`.

    input_ids, attention_mask, position_ids: (batch, longest) int64; offsets: (batch,) int64, the column of each
    row's first token. Position ids count from 0 at each row's first real token, as if the row were unpadded:
    models such as Llama number positions 0..seq-1 regardless of the mask, so explicit ids keep a left-padded row
    identical to the same sequence alone.
    """
    lengths = np.array([len(sequences[row]) for row in rows], dtype=np.int64)
    seq = int(lengths.max())
    input_ids = np.full((len(rows), seq), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), seq), dtype=np.int64)
    offsets = seq - lengths if padding_side == "left" else np.zeros_like(lengths)
    for i, row in enumerate(rows):
        input_ids[i, offsets[i] : offsets[i] + lengths[i]] = sequences[row]
        attention_mask[i, offsets[i] : offsets[i] + lengths[i]] = 1
    position_ids = np.clip(np.cumsum(attention_mask, axis=1) - 1, 0, None)
    return input_ids, attention_mask, position_ids, offsets
