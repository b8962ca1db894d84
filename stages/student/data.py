"""What the student reads: prompts in its own tokenizer, padded into batches, and the seeded batch streams.

Every arm draws the same batches: a fixed number of labeled and of transfer rows per step from two
independently seeded, cycling permutations, so the arms differ only in their targets.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stages.modeling.chat import chat_prompts
from stages.modeling.cloze import ClozeTokens, tokenize_cloze
from stages.sources.prompts import PromptConfig, format_prompt
from stages.sources.schema import Split


@dataclass(frozen=True)
class EncodedSplit:
    """A split's prompts in the student's tokenizer (unpadded) with its gold answers and valid slots."""

    ids: list[str]
    token_ids: list[list[int]]
    answers: np.ndarray  # (n_examples,) int64
    valid: np.ndarray  # (n_examples, MAX_CHOICES) bool
    cloze: ClozeTokens | None = None  # the options as cloze continuations (the split the student is scored on)

    @property
    def n_examples(self) -> int:
        return len(self.token_ids)


def encode_split(
    split: Split, tokenizer: Any, prompt: PromptConfig, cloze: bool = False, prefix: str = ""
) -> EncodedSplit:
    """The split's prompts in the student's tokenizer (the same text the teacher read, in other tokens), and with
    `cloze` its cloze sequences (prompt.cloze_template, scored like the teacher's: stages/modeling/cloze.py)."""
    texts = [prefix + format_prompt(q, c, prompt) for q, c in zip(split.questions, split.choices, strict=True)]
    if prompt.chat_template:  # the student's own template, which holds its special tokens already
        texts = chat_prompts(tokenizer, texts, "student")[0]
    token_ids = tokenizer(texts, add_special_tokens=not prompt.chat_template)["input_ids"]
    sequences = (
        tokenize_cloze(tokenizer, split.questions, split.choices, prompt.cloze_template, split.ids) if cloze else None
    )
    return EncodedSplit(list(split.ids), list(token_ids), split.answers, split.valid_mask(), sequences)


def pad_batch(token_ids: list[list[int]], tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, last_index), each row's answer position at last_index.

    Right padding keeps position ids identical to the unpadded prompt, whatever the model does with them;
    it is asked for in this call only, so the tokenizer's own padding_side (saved with the student) is untouched.
    input_ids, attention_mask: (batch, longest prompt) int64; last_index: (batch,) int64.
    """
    padded = tokenizer.pad(
        {"input_ids": token_ids}, padding=True, padding_side="right", return_attention_mask=True, return_tensors="pt"
    )
    return padded["input_ids"], padded["attention_mask"], padded["attention_mask"].sum(dim=-1) - 1


def cycling_indices(n_examples: int, seed: int) -> Iterator[int]:
    """Endless stream of row indices: a fresh seeded permutation each pass over the rows."""
    generator = np.random.default_rng(seed)
    while True:
        yield from generator.permutation(n_examples).tolist()


@dataclass(frozen=True)
class StepRows:
    """Row indices one training step uses from each training split."""

    labeled: list[int]
    transfer: list[int]


def step_rows(
    n_labeled: int, n_transfer: int, labeled_per_step: int, transfer_per_step: int, seed: int
) -> Iterator[StepRows]:
    """The batch stream every arm shares: two independent seeded cycles over labeled and transfer."""
    labeled_stream = cycling_indices(n_labeled, seed)
    transfer_stream = cycling_indices(n_transfer, seed + 1) if n_transfer and transfer_per_step else iter(())
    while True:
        labeled = [next(labeled_stream) for _ in range(labeled_per_step)]
        transfer = [next(transfer_stream) for _ in range(transfer_per_step)] if n_transfer else []
        yield StepRows(labeled, transfer)
