"""The multiple-choice prompt every model reads: teacher extraction, teacher labels, every student arm.

One prompt per question: the question, each option on its own line as `A. text`, then `Answer:`.
Letters go by position (A, B, C, ...) whatever the dataset's own labels were. The answer position is
the last prompt token.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from stages.core.errors import InputError

if TYPE_CHECKING:
    import numpy as np

LETTERS = string.ascii_uppercase  # 26 option slots at most
MAX_CHOICES = len(LETTERS)
DEFAULT_TEMPLATE = "{question}\n{options}\nAnswer:"
DEFAULT_CLOZE_TEMPLATE = "{question}\nAnswer:"


@dataclass(frozen=True)
class PromptConfig:
    template: str = DEFAULT_TEMPLATE
    """Python format string with `{question}` and `{options}`; must end where the answer letter would go."""
    option_format: str = "{letter}. {text}"
    """How one option line reads; `{letter}` and `{text}`."""
    cloze_template: str = DEFAULT_CLOZE_TEMPLATE
    """The cloze readout's context: `{question}` without the options; each option's text, after a space, is scored
    as its continuation (lm-evaluation-harness style)."""
    on_too_long: Literal["error", "skip", "truncate"] = "error"
    """A prompt longer than the teacher's or the student's positions, decided once in `prepare`: error | skip
    (drop the example from its split, counted) | truncate (cut the question from the left, keeping the options and
    the answer cue)."""
    chat_template: bool = False
    """Wrap the lettered prompt in each model's own chat template (a user turn, the assistant turn opened; the
    answer is read at the assistant's first token): for instruct teachers and students."""
    shots: int = 0
    """Solved examples from `labeled` before every prompt (0..8; the same ones for every example, chosen by seed)."""

    def __post_init__(self) -> None:
        for field in ("{question}", "{options}"):
            if field not in self.template:
                raise InputError(f"params.yaml: prompt.template must contain {field}; got {self.template!r}")
        if "{question}" not in self.cloze_template or "{options}" in self.cloze_template:
            raise InputError(
                "params.yaml: prompt.cloze_template must contain {question} and not {options} (the cloze readout "
                f"hides the options); got {self.cloze_template!r}"
            )
        if not 0 <= self.shots <= 8:
            raise InputError(f"params.yaml: prompt.shots={self.shots} must be between 0 and 8")
        for field in ("{letter}", "{text}"):
            if field not in self.option_format:
                raise InputError(f"params.yaml: prompt.option_format must contain {field}; got {self.option_format!r}")
        for name, fields in (("template", ("question", "options")), ("option_format", ("letter", "text")),
                             ("cloze_template", ("question",))):  # fmt: skip
            check_format(name, getattr(self, name), fields)

    @property
    def digest(self) -> str:
        """Short hash of everything that changes the lettered prompt's text (recorded in artifacts)."""
        chat = "\x00chat" if self.chat_template else ""  # absent when off: digests of plain prompts as before
        shots = f"\x00shots={self.shots}" if self.shots else ""
        payload = f"{self.template}\x00{self.option_format}{chat}{shots}".encode()
        return hashlib.sha256(payload).hexdigest()[:16]


def check_format(name: str, text: str, fields: tuple[str, ...]) -> None:
    """`text` formats with exactly `fields` (a stray brace or an unknown field is a clear error, not a traceback)."""
    try:
        text.format(**dict.fromkeys(fields, ""))
    except (ValueError, KeyError, IndexError, AttributeError) as error:
        what = f"unknown field {{{error.args[0]}}}" if isinstance(error, KeyError) else str(error)
        allowed = " and ".join(f"{{{field}}}" for field in fields)
        raise InputError(
            f"params.yaml: prompt.{name}={text!r}: {what}; it may use {allowed} (write {{{{ and }}}} for a literal "
            "brace)"
        ) from None


def format_prompt(question: str, choices: Sequence[str], config: PromptConfig = PromptConfig()) -> str:
    if not 2 <= len(choices) <= MAX_CHOICES:
        raise InputError(f"a question needs 2..{MAX_CHOICES} choices, got {len(choices)}")
    options = "\n".join(
        config.option_format.format(letter=letter, text=text)
        for letter, text in zip(LETTERS[: len(choices)], choices, strict=True)
    )
    return config.template.format(question=question, options=options)


def option_line_ends(question: str, choices: Sequence[str], config: PromptConfig = PromptConfig()) -> list[int]:
    """Character offset, in `format_prompt`'s text, just past each option's line (its last character + 1).

    Found from the template itself (where `{options}` lands once `{question}` is filled), so any template works.
    """
    marker = "\x00options\x00"  # not in any real question: the text before it is the real prompt's
    start = config.template.format(question=question, options=marker).index(marker)
    ends, offset = [], start
    for letter, text in zip(LETTERS, choices, strict=False):
        offset += len(config.option_format.format(letter=letter, text=text))
        ends.append(offset)
        offset += 1  # the newline between option lines
    return ends


def check_prompts_fit(
    lengths: Sequence[int] | np.ndarray, example_ids: Sequence[str], model_config: object, role: str
) -> None:
    """Clear error when a prompt has more tokens than the model has positions.

    Learned position tables (BERT-style encoders) would fail with an index error deep inside the forward, and
    rotary models would silently read positions they were never trained on.
    """
    limit = getattr(model_config, "max_position_embeddings", None)
    if limit is None or not len(lengths):
        return
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    if lengths[longest] > limit:
        raise InputError(
            f"example {example_ids[longest]}: its prompt has {lengths[longest]} {role} tokens, more than the "
            f"{role}'s {limit} positions (max_position_embeddings); shorten prompt.template or use another {role}"
        )
