"""`prompt.chat_template: true`: the lettered prompt as a user turn in the model's own chat template, the assistant
turn opened, for teacher and students alike (each in its own tokenizer's template).

The templated text already holds the template's special tokens (BOS and turn markers), so it is tokenised without
adding more. The answer position is its last non-special token, the end of the assistant header, which predicts the
assistant's first token; the option letters are the tokens the tokenizer produces for `A`, `B`, ... right there
(stages/modeling/letters.py, rule `chat`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stages.core.errors import InputError


def require_template(tokenizer: Any, role: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(
            f"prompt.chat_template is true but the {role}'s tokenizer ({type(tokenizer).__name__}) has no chat "
            "template; set prompt.chat_template: false"
        )


def in_chat(tokenizer: Any, prompt: str) -> str:
    """`prompt` as the user turn of the tokenizer's chat template, the assistant turn opened."""
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat_prompts(tokenizer: Any, prompts: Sequence[str], role: str) -> tuple[list[str], list[int]]:
    """(templated texts, character offset of each prompt inside its text), for mapping the option lines' ends."""
    require_template(tokenizer, role)
    texts, offsets = [], []
    for prompt in prompts:
        text = in_chat(tokenizer, prompt)
        offset = text.find(prompt)
        if offset < 0:  # a template that trims or rewrites the message: the options cannot be located
            raise InputError(
                f"the {role}'s chat template changes the prompt's text (it trims or rewrites the user message), so "
                "the option lines cannot be found in it; set prompt.chat_template: false"
            )
        texts.append(text)
        offsets.append(offset)
    return texts, offsets


def assistant_start(tokenizer: Any, role: str) -> str:
    """A templated text ending where the assistant's first token goes (the letters are read after it)."""
    require_template(tokenizer, role)
    return in_chat(tokenizer, "?")
