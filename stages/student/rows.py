"""The rows a student trains and is evaluated on, with each training row's targets, read from `TrainPaths`.

Training stacks `labeled` then `transfer`; an arm's soft labels and the teacher's hidden states are read in
that same order and checked against the splits' example ids, so row i of every array is the same example.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import InputError
from stages.sources.prompts import PromptConfig
from stages.sources.schema import Split, read_split
from stages.sources.shots import SHOTS_FILE, shots_prefix
from stages.student.config import HLDConfig, TrainPaths, TrainSetup
from stages.student.data import EncodedSplit, encode_split

TRAINING_SPLITS = ("labeled", "transfer")  # stacked in this order
EVALUATION_SPLITS = ("val", "test")


@dataclass
class TrainingRows:
    """labeled + transfer rows stacked (labeled first), with each row's targets."""

    encoded: EncodedSplit
    gold_rows: np.ndarray  # (n_rows,) bool: rows whose gold answer CE trains on (labeled; transfer too for oracles)
    soft_labels: np.ndarray | None  # (n_rows, MAX_CHOICES)
    teacher_hidden: np.ndarray | None  # (n_rows, d_teacher)
    n_labeled: int


def load_rows(setup: TrainSetup, paths: TrainPaths, tokenizer: Any) -> TrainingRows:
    """Read labeled and transfer, and the arm's targets; fail early and clearly on unavailable inputs."""
    splits = {name: read_split(paths.prepared / f"{name}.parquet") for name in TRAINING_SPLITS}
    if splits["labeled"].n_examples == 0:
        raise InputError(f"{paths.prepared / 'labeled.parquet'}: no labeled examples to train on")
    prefix = shots_prefix(paths.prepared / SHOTS_FILE, setup.prompt)
    parts = [encode_split(splits[name], tokenizer, setup.prompt, prefix=prefix) for name in TRAINING_SPLITS]
    soft_labels = read_soft_labels(setup, paths.soft_labels, splits) if setup.terms.soft_labels else None
    teacher_hidden = read_teacher_hidden(setup.hld, paths, splits) if setup.hld is not None else None
    encoded = stack(parts)
    n_labeled = parts[0].n_examples
    # Transfer gold stays hidden from training unless the arm is the gold_transfer oracle.
    gold_rows = np.arange(encoded.n_examples) < (encoded.n_examples if setup.terms.gold_transfer else n_labeled)
    return TrainingRows(encoded, gold_rows, soft_labels, teacher_hidden, n_labeled)


def stack(parts: list[EncodedSplit]) -> EncodedSplit:
    """One EncodedSplit of `parts`' rows, in order."""
    return EncodedSplit(
        ids=[i for part in parts for i in part.ids],
        token_ids=[tokens for part in parts for tokens in part.token_ids],
        answers=np.concatenate([part.answers for part in parts]),
        valid=np.concatenate([part.valid for part in parts]),
    )


def read_soft_labels(setup: TrainSetup, path: Path | None, splits: dict[str, Split]) -> np.ndarray:
    """(n_rows, MAX_CHOICES) soft labels of labeled then transfer, aligned with the splits' rows."""
    from stages.probing.label_files import read_labels

    if path is None:
        raise InputError(
            f"distill.arms.{setup.arm}.soft_labels={setup.terms.soft_labels} needs the {setup.terms.soft_labels} "
            "label file, but no soft-label file was given to train"
        )
    return np.concatenate([read_labels(path, splits[name], name) for name in TRAINING_SPLITS])


def read_teacher_hidden(hld: HLDConfig, paths: TrainPaths, splits: dict[str, Split]) -> np.ndarray:
    """(n_rows, d_teacher) teacher hidden states at `distill.hld.teacher_layer`, labeled then transfer."""
    from stages.store.reader import HiddenStore

    if len(paths.hidden) != len(TRAINING_SPLITS):
        raise InputError(
            f"HLD arms need the teacher's hidden-state stores of {' and '.join(TRAINING_SPLITS)} (in that order); "
            f"got {len(paths.hidden)}: {[str(path) for path in paths.hidden]}"
        )
    blocks = []
    for name, path in zip(TRAINING_SPLITS, paths.hidden, strict=True):
        store = HiddenStore.open(path)
        if store.example_ids != splits[name].ids:
            raise InputError(
                f"{store.path}: example ids differ from {paths.prepared / f'{name}.parquet'}; rerun extract"
            )
        index = store.index_of(hld.teacher_layer, "distill.hld.teacher_layer")
        blocks.append(store.read_layer(index))  # (n_examples, d_teacher)
    return np.concatenate(blocks)


def load_evaluation(prepared: Path, tokenizer: Any, prompt: PromptConfig) -> dict[str, EncodedSplit]:
    """val and test in the student's tokenizer; test also as cloze sequences (the student is scored both ways)."""
    prefix = shots_prefix(prepared / SHOTS_FILE, prompt)
    return {
        name: encode_split(read_split(prepared / f"{name}.parquet"), tokenizer, prompt, name == "test", prefix)
        for name in EVALUATION_SPLITS
    }
