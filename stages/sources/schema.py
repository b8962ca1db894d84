"""The canonical multiple-choice example, and reading/writing a split's parquet file.

Columns: `id` (unique string), `question`, `choices` (2..26 strings), `answer` (index into choices),
`source` and `subject` (nullable metadata). Every stage after `prepare` reads splits through `read_split`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stages.core.errors import InputError
from stages.sources.prompts import LETTERS, MAX_CHOICES

SPLITS = ("labeled", "transfer", "val", "test")

SPLIT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("choices", pa.list_(pa.string()), nullable=False),
        pa.field("answer", pa.int64(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("subject", pa.string()),
    ]
)


@dataclass(frozen=True)
class Split:
    """One split, column-wise, in file order."""

    ids: list[str]
    questions: list[str]
    choices: list[list[str]]
    answers: np.ndarray  # (n_examples,) int64
    sources: list[str | None]
    subjects: list[str | None]

    @property
    def n_examples(self) -> int:
        return len(self.ids)

    @property
    def n_choices(self) -> np.ndarray:
        """(n_examples,) int64: how many options each question has."""
        return np.array([len(c) for c in self.choices], dtype=np.int64)

    def valid_mask(self) -> np.ndarray:
        """(n_examples, MAX_CHOICES) bool: True for option slots the question has."""
        return np.arange(MAX_CHOICES)[None, :] < self.n_choices[:, None]


def split_to_table(rows: Sequence[dict], metadata: dict[str, str] | None = None) -> pa.Table:
    table = pa.Table.from_pylist(
        [{name: row.get(name) for name in SPLIT_SCHEMA.names} for row in rows], schema=SPLIT_SCHEMA
    )
    return table.replace_schema_metadata({k.encode(): v.encode() for k, v in (metadata or {}).items()})


def write_split(rows: Sequence[dict], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write one split (the caller handles atomic placement of the folder)."""
    pq.write_table(split_to_table(rows, metadata), str(path))


def read_split(path: str | Path) -> Split:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: split file not found (run `dvc repro prepare` first)")
    table = pq.read_table(str(path))
    missing = [name for name in ("id", "question", "choices", "answer") if name not in table.column_names]
    if missing:
        raise InputError(f"{path}: not a prepared split, missing column(s) {missing}")
    n_rows = table.num_rows

    def optional(name: str) -> list[str | None]:
        return table.column(name).to_pylist() if name in table.column_names else [None] * n_rows

    return Split(
        ids=table.column("id").to_pylist(),
        questions=table.column("question").to_pylist(),
        choices=table.column("choices").to_pylist(),
        answers=np.asarray(table.column("answer").to_numpy(), dtype=np.int64),
        sources=optional("source"),
        subjects=optional("subject"),
    )


def prompt_fit(path: str | Path) -> dict | None:
    """What `prompt.on_too_long` did to the split in `path` (policy, skipped, truncated, a few ids), or None when
    prepare had no models to fit the prompts to."""
    import json

    encoded = (pq.read_schema(str(path)).metadata or {}).get(b"prompt_fit")
    return None if encoded is None else json.loads(encoded)


def example_problem(example: dict) -> str | None:
    """Why `example` is not a valid canonical example, or None when it is.

    Checks one row on its own; unique ids across rows are the caller's job (it knows the file and line).
    """
    example_id = example.get("id")
    if not isinstance(example_id, str) or not example_id.strip():
        return f"id must be a non-empty string (got {example_id!r})"
    question = example.get("question")
    if not isinstance(question, str) or not question.strip():
        return "empty question"
    choices = example.get("choices")
    if not isinstance(choices, (list, tuple)) or not all(isinstance(choice, str) for choice in choices):
        return f"choices must be a list of strings (got {type(choices).__name__})"
    if not 2 <= len(choices) <= MAX_CHOICES:
        return f"{len(choices)} choice{'' if len(choices) == 1 else 's'}; a question needs 2..{MAX_CHOICES}"
    empty = [index for index, choice in enumerate(choices) if not choice.strip()]
    if empty:
        return f"option {LETTERS[empty[0]]} is empty (no text to choose or to score)"
    answer = example.get("answer")
    if answer is None:
        return "missing answer"
    if isinstance(answer, bool) or not isinstance(answer, (int, np.integer)):
        return f"answer must be an integer index into choices (got {answer!r})"
    if not 0 <= int(answer) < len(choices):
        return f"answer {answer} out of range for {len(choices)} choices (0..{len(choices) - 1})"
    for name in ("source", "subject"):
        if example.get(name) is not None and not isinstance(example[name], str):
            return f"{name} must be a string or null (got {example[name]!r})"
    return None


def duplicate_options(example: dict) -> str | None:
    """Options of one question with the same text (after stripping), which no readout can tell apart; None if none."""
    seen: dict[str, int] = {}
    for index, choice in enumerate(example["choices"]):
        first = seen.setdefault(choice.strip(), index)
        if first != index:
            return f"options {LETTERS[first]} and {LETTERS[index]} have the same text {choice.strip()!r}"
    return None


def validate_example(example: dict, where: str) -> None:
    """Raise InputError naming `where` (file and line) when `example` is not a valid canonical example."""
    problem = example_problem(example)
    if problem is not None:
        raise InputError(f"{where}: {problem}")
