"""Per-question test predictions: what `summarize` bootstraps its intervals from.

A parquet file with one row per question, in the split's order: `id`, `answer` (the gold option) and one int64
column per readout holding the predicted option, null where the readout is unavailable (e.g. an encoder
teacher's letters). `label` writes the teacher readouts' and the probe's (`data/labels/test_predictions.parquet`),
`train` each student's (`data/students/<arm>/test_predictions.parquet`: its letter and cloze readouts).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stages.core.errors import InputError


def write_predictions(
    path: Path, ids: list[str], answers: np.ndarray, readouts: Mapping[str, np.ndarray | None], metadata: dict[str, Any]
) -> None:
    """`readouts`: name -> (n_examples,) predicted option, or None (a column of nulls). Same inputs, same bytes."""
    columns = {"id": pa.array(ids, pa.string()), "answer": pa.array(np.asarray(answers), pa.int64())}
    for name, predicted in readouts.items():
        values = [None] * len(ids) if predicted is None else np.asarray(predicted)
        columns[name] = pa.array(values, pa.int64())
    encoded = {key.encode(): json.dumps(metadata[key], sort_keys=True).encode() for key in sorted(metadata)}
    pq.write_table(pa.table(columns).replace_schema_metadata(encoded), str(path), compression="zstd")


def read_predictions(path: Path) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """(ids, answers, {readout: (n_examples,) bool correct}); readouts with nulls (unavailable) are left out."""
    if not path.exists():
        raise InputError(f"{path}: test predictions not found (rerun the stage that writes them)")
    table = pq.read_table(str(path))
    if {"id", "answer"} - set(table.column_names):
        raise InputError(f"{path}: not a predictions file (needs columns id and answer; has {table.column_names})")
    answers = np.asarray(table.column("answer").to_numpy(), dtype=np.int64)
    correct = {}
    for name in table.column_names[2:]:
        column = table.column(name)
        if column.null_count == 0:
            correct[name] = np.asarray(column.to_numpy(), dtype=np.int64) == answers
    return table.column("id").to_pylist(), answers, correct
