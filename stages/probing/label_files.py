"""Soft-label parquet files (`data/labels/{probe,teacher,cloze}.parquet`): the contract between `label` and `train`.

One row per labeled or transfer example: `id`, `split`, `n_choices`, `probs` (list<float32> of length
n_choices, sums to 1), `layer` (probe layer; null for teacher labels), `fold` (the cross-fitting fold that did
not see a labeled example; null otherwise). Provenance lives in the parquet key-value metadata, each value
JSON-encoded: `kind` (probe | teacher | cloze), `available` (false when the teacher has no such readout: zero
rows, and `missing` says why), `layer`, `temperature`, `teacher`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stages.core.errors import InputError, Unavailable
from stages.sources.prompts import MAX_CHOICES
from stages.sources.schema import Split

LABEL_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("n_choices", pa.int64(), nullable=False),
        pa.field("probs", pa.list_(pa.float32()), nullable=False),
        pa.field("layer", pa.int64()),
        pa.field("fold", pa.int64()),
    ]
)
SUM_TOLERANCE = 1e-3  # float32 probabilities of up to 26 options sum to 1 within ~1e-6; 1e-3 catches real errors


def label_table(
    ids: list[str],
    split_name: str,
    probs: np.ndarray,
    n_choices: np.ndarray,
    layer: int | None = None,
    folds: np.ndarray | None = None,
) -> pa.Table:
    """Rows of one split. `probs` (n_examples, >= max n_choices), zeros beyond each example's choices."""
    rows = {
        "id": ids,
        "split": [split_name] * len(ids),
        "n_choices": [int(n) for n in n_choices],
        "probs": [np.asarray(p[:n], dtype=np.float32).tolist() for p, n in zip(probs, n_choices, strict=True)],
        "layer": [layer] * len(ids),
        "fold": [None] * len(ids) if folds is None else [int(f) for f in folds],
    }
    return pa.Table.from_pydict(rows, schema=LABEL_SCHEMA)


def write_labels(tables: list[pa.Table], path: str | Path, metadata: dict[str, Any]) -> None:
    """Concatenate split tables and write them with JSON-encoded provenance (the caller places it atomically).

    Same inputs give the same bytes (fixed schema, sorted metadata keys, no timestamps), so an unchanged
    teacher label file does not rerun the logit-KD student.
    """
    table = pa.concat_tables(tables) if tables else LABEL_SCHEMA.empty_table()
    encoded = {key.encode(): json.dumps(metadata[key], sort_keys=True).encode() for key in sorted(metadata)}
    pq.write_table(table.replace_schema_metadata(encoded), str(path), compression="zstd")


def read_metadata(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: label file not found (run `dvc repro label` first)")
    raw = pq.read_schema(str(path)).metadata or {}
    return {key.decode(): json.loads(value) for key, value in raw.items() if key != b"ARROW:schema"}


def read_labels(path: str | Path, split: Split, split_name: str) -> np.ndarray:
    """(n_examples, MAX_CHOICES) float32 soft labels aligned with `split`'s row order, zeros beyond its choices."""
    path = Path(path)
    metadata = read_metadata(path)
    if not metadata.get("available", True):
        raise Unavailable(
            f"{path}: no {metadata.get('kind', '?')} labels: {metadata.get('missing', 'the teacher has none')}; an arm "
            "distilling from them cannot run (use probe_kd or hld instead)"
        )
    table = pq.read_table(str(path))
    if not table.schema.remove_metadata().equals(LABEL_SCHEMA):
        raise InputError(f"{path}: not a label file; expected columns {LABEL_SCHEMA}, got {table.schema}")
    table = table.filter(pc.equal(table.column("split"), split_name))
    ids = table.column("id").to_pylist()
    _check_ids(path, split_name, ids, split.ids)
    row_of = {example_id: row for row, example_id in enumerate(ids)}
    order = np.array([row_of[example_id] for example_id in split.ids], dtype=np.int64)
    n_choices = np.asarray(table.column("n_choices").to_numpy(), dtype=np.int64)[order]
    mismatch = np.flatnonzero(n_choices != split.n_choices)
    if mismatch.size:
        row = int(mismatch[0])
        raise InputError(
            f"{path}: example {split.ids[row]!r} has {n_choices[row]} label choices but {split_name} has "
            f"{split.n_choices[row]}; the labels come from another dataset: rerun `dvc repro label`"
        )
    probs_column = table.column("probs").to_pylist()
    labels = np.zeros((split.n_examples, MAX_CHOICES), dtype=np.float32)  # (n_examples, MAX_CHOICES)
    for row, source in enumerate(order):
        probs = np.asarray(probs_column[source], dtype=np.float32)
        if probs.shape != (n_choices[row],) or not np.all(np.isfinite(probs)) or np.any(probs < 0):
            raise InputError(f"{path}: example {split.ids[row]!r}: probs must be {n_choices[row]} finite values >= 0")
        if abs(float(probs.sum(dtype=np.float64)) - 1.0) > SUM_TOLERANCE:
            raise InputError(
                f"{path}: example {split.ids[row]!r}: probs sum to {probs.sum():.6f}, not 1 (tolerance {SUM_TOLERANCE})"
            )
        labels[row, : n_choices[row]] = probs
    return labels


def _check_ids(path: Path, split_name: str, label_ids: list[str], split_ids: list[str]) -> None:
    if len(set(label_ids)) != len(label_ids):
        raise InputError(f"{path}: duplicate ids in split {split_name!r}")
    missing = sorted(set(split_ids) - set(label_ids))
    extra = sorted(set(label_ids) - set(split_ids))
    if missing or extra:
        raise InputError(
            f"{path}: ids of split {split_name!r} do not match the prepared split ({len(missing)} missing, "
            f"e.g. {missing[:3]}; {len(extra)} extra, e.g. {extra[:3]}): rerun `dvc repro label`"
        )
