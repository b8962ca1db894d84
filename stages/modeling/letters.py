"""The option-letter token rule, shared by teacher extraction and student training so they cannot drift.

The next token after `Answer:` is, in order of preference:
- `space`: the letter with a leading space (` A`, i.e. `ĠA` in byte-level BPE) when every needed letter is one
  distinct token that way;
- `context`: the one token the tokenizer adds when ` A` follows `Answer:` (SentencePiece-style tokenizers, whose
  ` A` alone encodes as `▁` + `▁A` or similar but `Answer: A` ends in the single `▁A`), when the context's own
  tokens are unchanged by it (a tokenizer that merges `: A` or `:A` across the boundary fails this test);
- `bare`: the bare letter (`A`) when that is one distinct token each (WordPiece);
otherwise the model cannot score letters and we refuse. With `prompt.chat_template: true` the letter is read right
after the opened assistant turn instead (`chat`: the one token `A` adds there, stages/modeling/chat.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stages.core.errors import InputError
from stages.sources.prompts import LETTERS

CONTEXT = "Answer:"  # the default template's end, where the letter is read


def _space(tokenizer: Any, letter: str) -> list[int]:
    return tokenizer.encode(" " + letter, add_special_tokens=False)


def _after(tokenizer: Any, context: str, continuation: str) -> list[int]:
    """The tokens `continuation` adds after `context`; none when it changes the context's own tokens."""
    before = tokenizer.encode(context, add_special_tokens=False)
    full = tokenizer.encode(context + continuation, add_special_tokens=False)
    return full[len(before) :] if full[: len(before)] == before else []


def _context(tokenizer: Any, letter: str) -> list[int]:
    return _after(tokenizer, CONTEXT, " " + letter)


def _bare(tokenizer: Any, letter: str) -> list[int]:
    return tokenizer.encode(letter, add_special_tokens=False)


Rule = tuple[str, Callable[[Any, str], list[int]]]
LETTER_RULES: tuple[Rule, ...] = (("space", _space), ("context", _context), ("bare", _bare))


def letter_token_ids(tokenizer: Any, n_letters: int, role: str, chat: str | None = None) -> tuple[list[int], str]:
    """Token id of each of the first `n_letters` option letters, and the rule used (`space`, `context`, `bare`);
    with `chat` (a templated text ending in the opened assistant turn) the tokens read there (`chat`)."""
    rules = LETTER_RULES
    if chat is not None:
        rules = (("chat", lambda tokenizer, letter: _after(tokenizer, chat, letter)),)
    for rule, encode in rules:
        pieces = [encode(tokenizer, letter) for letter in LETTERS[:n_letters]]
        if all(len(piece) == 1 for piece in pieces):
            ids = [piece[0] for piece in pieces]
            if len(set(ids)) == n_letters:
                return ids, rule
    where = "after the opened assistant turn" if chat else f"with a leading space, after {CONTEXT!r} or bare"
    raise InputError(
        f"the {role}'s tokenizer ({type(tokenizer).__name__}) has no single distinct token per option letter "
        f"A..{LETTERS[n_letters - 1]} ({where}), so option logits are "
        f"undefined; use another {role}"
    )
