"""The probe stage's output folder: written at once (atomically), read back by `label`.

- `probs.safetensors`: per-layer probabilities `<split>` (n_layers, n_examples, n_options) for every split
  (out-of-fold for `labeled`), `labeled_fold`, `layers`, `temperature`; so `label` never refits.
- `weights.safetensors`: the probes refit on all of `labeled` (standardisation stats included).
- `metrics.json` (best cross-validated layer, flat), `layers.json` (every layer), `plots/layers.csv`.

Both safetensors files carry the provenance (`config`, `teacher`, `n_teacher_layers`, `example_ids`) as one
metadata key, `probekd`, holding canonical JSON: the writer keeps metadata in a Rust hash map whose order
changes with every process, so several keys would give different bytes (and a new DVC hash) on every run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file
from safetensors.torch import save_file

from stages.core.atomic import atomic_path
from stages.core.errors import InputError
from stages.core.metrics import best_layer_index
from stages.core.plot_data import write_csv
from stages.sources.schema import Split

PROBS_FILE = "probs.safetensors"
METADATA_KEY = "probekd"  # the one safetensors metadata key: canonical JSON of the provenance


@dataclass
class ProbeResult:
    layers: list[int]
    logits: dict[str, torch.Tensor]  # split -> (n_layers, n_examples, n_slots), -inf on invalid slots
    probs: dict[str, np.ndarray]  # split -> (n_layers, n_examples, n_slots), calibrated when asked
    labeled_fold: np.ndarray  # (n_labeled,)
    temperature: np.ndarray  # (n_layers,)
    weights: dict[str, torch.Tensor]  # refit on all labeled; leading dim n_layers
    layer_metrics: list[dict] = field(default_factory=list)


def write_outputs(out: Path, result: ProbeResult, splits: dict[str, Split], provenance: dict) -> None:
    """Everything into a temporary folder, renamed to `out` only when complete."""
    rows = result.layer_metrics
    best = rows[best_layer_index([row["cv_acc"] for row in rows], result.layers)]
    example_ids = {name: split.ids for name, split in splits.items()}
    metadata = {METADATA_KEY: canonical_json({**provenance, "example_ids": example_ids})}
    with atomic_path(out, directory=True) as temp:
        temp.mkdir(parents=True, exist_ok=True)
        layers = torch.tensor(result.layers, dtype=torch.int64)
        temperature = torch.from_numpy(result.temperature.astype(np.float32))
        tensors = {name: torch.from_numpy(probs) for name, probs in result.probs.items()}
        extra = {"labeled_fold": torch.from_numpy(result.labeled_fold), "layers": layers, "temperature": temperature}
        save_file({**tensors, **extra}, str(temp / PROBS_FILE), metadata=metadata)
        weights = {name: w.contiguous() for name, w in result.weights.items()}
        save_file(
            {**weights, "layers": layers, "temperature": temperature}, str(temp / "weights.safetensors"), metadata
        )
        metrics = {"best_layer": best["layer"], **best}
        (temp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        (temp / "layers.json").write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
        (temp / "plots").mkdir()
        # teacher_acc and teacher_cloze_acc: the teacher's letter and cloze readouts on test (reference lines);
        # empty where the teacher has no such readout (an encoder; extract.cloze: false).
        columns = ["layer", "cv_acc", "val_acc", "test_acc", "teacher_test_acc", "teacher_cloze_test_acc"]
        values = ([row.get(column, "") for column in columns] for row in rows)
        header = ["layer", "cv_acc", "val_acc", "test_acc", "teacher_acc", "teacher_cloze_acc"]
        write_csv(temp / "plots" / "layers.csv", header, values)


def canonical_json(value: Any) -> str:
    """The one JSON text of `value`: sorted keys, fixed separators, ASCII, so equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def read_probe_output(probe_dir: Path, splits: dict[str, Split]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Tensors and metadata of probs.safetensors, checked against the splits the reader holds."""
    path = probe_dir / PROBS_FILE
    if not path.exists():
        raise InputError(f"{path}: probe output not found (run `dvc repro probe` first)")
    with safe_open(str(path), framework="numpy") as handle:
        encoded = (handle.metadata() or {}).get(METADATA_KEY)
    if encoded is None:
        raise InputError(
            f"{path}: no {METADATA_KEY!r} metadata (written by an older probe stage); rerun `dvc repro probe`"
        )
    metadata = json.loads(encoded)
    tensors = load_file(str(path))
    for name in splits:
        if metadata.get("example_ids", {}).get(name) != splits[name].ids:
            raise InputError(f"{path}: {name} example ids differ from the prepared split; rerun `dvc repro probe`")
    return tensors, metadata
