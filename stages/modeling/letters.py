"""The option-letter token rule, shared by teacher extraction and student training so they cannot drift.

The next token after `Answer:` is the letter with a leading space (` A`) when every needed letter is one
distinct token that way (byte-level BPE, SentencePiece); otherwise the bare letter (`A`) when that is one
distinct token each (WordPiece); otherwise the model cannot score letters and we refuse.
"""

from __future__ import annotations

from typing import Any

from stages.core.errors import InputError
from stages.sources.prompts import LETTERS

LETTER_RULES = (("space", " "), ("bare", ""))


def letter_token_ids(tokenizer: Any, n_letters: int, role: str) -> tuple[list[int], str]:
    """Token id of each of the first `n_letters` option letters, and the rule used (`space` or `bare`)."""
    for rule, prefix in LETTER_RULES:
        pieces = [tokenizer.encode(prefix + letter, add_special_tokens=False) for letter in LETTERS[:n_letters]]
        if all(len(piece) == 1 for piece in pieces):
            ids = [piece[0] for piece in pieces]
            if len(set(ids)) == n_letters:
                return ids, rule
    raise InputError(
        f"the {role}'s tokenizer ({type(tokenizer).__name__}) has no single distinct token per option letter "
        f"A..{LETTERS[n_letters - 1]} (with or without a leading space), so option logits are undefined; "
        f"use another {role}"
    )
