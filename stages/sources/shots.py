"""Few-shot prompts (`prompt.shots: k`): k solved examples before every prompt of a run, drawn from `labeled` only.

`prepare` writes `shots.parquet`, the first SHOT_POOL examples of `labeled` in the split rule's order (a hash of
`seed` and id, stages/sources/splits.py): deterministic from `seed`, never from transfer, val or test, and the same
file for any `data.labeled` >= SHOT_POOL, so a labeled-budget sweep does not rerun extraction. Every prompt of a
run gets the same k examples, each written as the prompt itself followed by ` <letter>` and a blank line. Their
tokens count in the prompt-length check, since they are part of the tokenised prompt.

A shot that is also the question being asked shows its own answer: the probe's out-of-fold labels of those k
labeled examples (and the teacher's) are contaminated, a small share of `labeled` for small k.
"""

from __future__ import annotations

from pathlib import Path

from stages.core.errors import InputError
from stages.sources.prompts import LETTERS, PromptConfig, format_prompt
from stages.sources.schema import read_split

SHOT_POOL = 8  # the most shots a run can ask for
SHOTS_FILE = "shots.parquet"
SEPARATOR = "\n\n"


def shot_pool(labeled: list[dict]) -> list[dict]:
    """The examples `prepare` keeps for few-shot prompts: the first SHOT_POOL of the labeled split."""
    return labeled[:SHOT_POOL]


def shots_prefix(path: Path | None, prompt: PromptConfig) -> str:
    """The text before every prompt: `prompt.shots` solved examples from `path` (shots.parquet), or ''."""
    if prompt.shots == 0:
        return ""
    if path is None:
        raise InputError(f"prompt.shots={prompt.shots} needs the prepared {SHOTS_FILE}; rerun `dvc repro prepare`")
    pool = read_split(path)
    if prompt.shots > pool.n_examples:
        raise InputError(
            f"prompt.shots={prompt.shots} but {path} holds {pool.n_examples} labeled examples (at most {SHOT_POOL}, "
            "and no more than data.labeled); lower prompt.shots"
        )
    solved = [
        format_prompt(question, choices, prompt) + " " + LETTERS[answer]
        for question, choices, answer in zip(pool.questions, pool.choices, pool.answers, strict=True)
    ]
    return SEPARATOR.join(solved[: prompt.shots]) + SEPARATOR
