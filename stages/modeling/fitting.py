"""Prompts that must fit every model's positions: `prompt.on_too_long`, applied by `prepare` to every split.

A prompt longer than a model's `max_position_embeddings` cannot be read (learned position tables fail, rotary
models read positions they never saw). Deciding it once, in `prepare`, against both the teacher and the student,
keeps every later file aligned by construction: the stores, the label files and the students all read the same
prepared examples. `error` stops naming the example; `skip` drops it from its split (counted per split in the
parquet metadata, the store attributes and the summary); `truncate` cuts the question from the left (prefixed
with `...`) until the prompt fits, keeping every option and the answer cue.

A prompt's length is the larger of the lettered prompt and its longest cloze sequence (question without options
and one option, prompt.cloze_template), with the tokenizer's special tokens, in each model's own tokenizer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.errors import InputError
from stages.sources.prompts import PromptConfig, format_prompt

log = logging.getLogger(__name__)
ELLIPSIS = "..."


@dataclass(frozen=True)
class Reader:
    """One model as far as prompt length goes: its role, tokenizer and number of positions (None: no limit)."""

    role: str
    tokenizer: Any
    positions: int | None

    @classmethod
    def load(cls, role: str, model_dir: Path) -> Reader:
        from transformers import AutoConfig

        from stages.modeling.loading import ModelRef, load_tokenizer

        ref = ModelRef.read(model_dir)
        config = AutoConfig.from_pretrained(
            ref.location(model_dir), revision=ref.hub_revision, trust_remote_code=ref.trust_remote_code
        )
        return cls(role, load_tokenizer(ref, model_dir), getattr(config, "max_position_embeddings", None))

    def length(self, question: str, choices: list[str], prompt: PromptConfig) -> int:
        lettered = format_prompt(question, choices, prompt)
        cloze = f"{prompt.cloze_template.format(question=question)} {max(choices, key=len)}"
        return max(len(self.tokenizer(text, add_special_tokens=True)["input_ids"]) for text in (lettered, cloze))


@dataclass
class PromptFit:
    """Applies `prompt.on_too_long` to prepared rows (`__call__`), against every reader's positions."""

    prompt: PromptConfig
    readers: list[Reader]

    def overflow(self, question: str, choices: list[str]) -> tuple[Reader, int] | None:
        """The first reader whose positions the prompt exceeds, with the prompt's length in its tokens."""
        for reader in self.readers:
            if reader.positions is not None:
                length = reader.length(question, choices, self.prompt)
                if length > reader.positions:
                    return reader, length
        return None

    def truncated(self, row: dict) -> str | None:
        """The longest left-truncated question that fits every reader (None: not even an empty question does)."""
        question, choices = row["question"], row["choices"]
        if self.overflow(ELLIPSIS, choices) is not None:
            return None
        low, high = 1, len(question)  # drop question[:k]; the smallest k that fits, by bisection
        while low < high:
            middle = (low + high) // 2
            if self.overflow(ELLIPSIS + question[middle:], choices) is None:
                high = middle
            else:
                low = middle + 1
        return ELLIPSIS + question[low:]

    def __call__(self, name: str, rows: list[dict]) -> tuple[list[dict], dict[str, Any]]:
        """(`rows` of split `name` with `prompt.on_too_long` applied, what it did: the counts and a few ids)."""
        policy, kept, skipped, truncated = self.prompt.on_too_long, [], [], []
        for row in rows:
            problem = self.overflow(row["question"], row["choices"])
            if problem is None:
                kept.append(row)
                continue
            reader, length = problem
            why = (f"example {row['id']} ({name}): its prompt has {length} {reader.role} tokens, more than the "
                   f"{reader.role}'s {reader.positions} positions (max_position_embeddings)")  # fmt: skip
            if policy == "error":
                raise InputError(f"{why}; set prompt.on_too_long: skip or truncate, or use another {reader.role}")
            question = self.truncated(row) if policy == "truncate" else None
            if question is None:
                if policy == "truncate":
                    raise InputError(f"{why}, even with the question cut away: its options alone are too long")
                skipped.append(row["id"])
                continue
            truncated.append(row["id"])
            kept.append({**row, "question": question})
        note = {"policy": policy, "skipped": len(skipped), "truncated": len(truncated),
                "examples": (skipped + truncated)[:5]}  # fmt: skip
        if skipped or truncated:
            log.warning("%s: %d prompts too long for the models' positions: %d skipped, %d truncated (prompt."
                        "on_too_long: %s), e.g. %s", name, len(skipped) + len(truncated), len(skipped),
                        len(truncated), policy, (skipped + truncated)[:3])  # fmt: skip
        return kept, note
