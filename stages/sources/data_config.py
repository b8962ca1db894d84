"""The `data` section of params.yaml: which dataset, and how many examples each split gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stages.core.errors import InputError


@dataclass(frozen=True)
class PrepareConfig:
    """The `data` section of params.yaml."""

    dataset: str = "builtin"
    """builtin | arc_easy | arc_challenge | mmlu | aqua_rat | path (under data/raw/) to a canonical file or folder."""
    path: str | None = None
    """Local copy of arc_*/mmlu/aqua_rat in its original published format, under data/raw/; null: the hub."""
    labeled: int = 64
    """Examples with gold answers the student may train on (the limited-data budget)."""
    transfer: int = 1024
    """Further training examples, labeled only by the teacher / probe (gold kept for diagnostics)."""
    val: int = 256
    """At most this many validation examples."""
    test: int = 512
    """At most this many test examples."""
    on_invalid: Literal["error", "skip"] = "error"
    """error | skip: skipping drops bad rows and reports how many per file."""
    allow_untracked: bool = False
    """Accept local data outside data/raw/ (with a warning): `dvc repro` then misses edits to it."""

    def __post_init__(self) -> None:
        if not self.dataset.strip():
            raise InputError("params.yaml: data.dataset is empty; give builtin, a benchmark name or a path")
        for name, minimum in (("labeled", 1), ("transfer", 0), ("val", 1), ("test", 1)):
            if getattr(self, name) < minimum:
                raise InputError(f"params.yaml: data.{name}={getattr(self, name)} must be >= {minimum}")
