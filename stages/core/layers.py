"""One rule for naming a model layer in params: 0 is the embedding output, i is block i, negative counts
from the last, `middle` (where allowed) is n_layers // 2. Every stage resolves layer params through here,
so the rule and its error message cannot drift apart."""

from __future__ import annotations

from stages.core.errors import InputError


def resolve_layer(value: int | str, n_layers: int, param: str, *, whose: str = "the teacher") -> int:
    """Layer index in 0..n_layers-1 for a param value; n_layers counts the embedding output."""
    if value == "middle":
        return n_layers // 2
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{param}={value!r}: use an integer layer index")
    resolved = value + n_layers if value < 0 else value
    if not 0 <= resolved < n_layers:
        raise InputError(f"{param}={value} but {whose} has layers 0..{n_layers - 1} (or {-n_layers}..-1 from the last)")
    return resolved
