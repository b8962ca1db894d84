"""`label`: soft labels for `labeled` + `transfer` from each source, their quality on transfer, and every readout
of the teacher and the probe on every split.

Probe labels come from `data/probe/probs.safetensors` at the layer `probe.layer` picks (nothing is refitted):
out-of-fold for labeled examples, the all-labeled refit for transfer. Teacher labels are the teacher's letter
distribution (`teacher.parquet`, temperature 1) and its cloze distribution (`cloze.parquet`, temperature fitted
on val), read from the hidden stores (stages/probing/readouts.py). A source the stores lack (an encoder teacher,
`extract.cloze: false`) gets an empty file with `available: false` and the reason.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stages.core.atomic import atomic_path, write_text_atomic
from stages.core.config import Section, build
from stages.core.errors import InputError
from stages.core.layers import resolve_layer
from stages.core.metrics import accuracy, best_layer_index, summary
from stages.core.params import section
from stages.core.predictions import write_predictions
from stages.probing.label_files import label_table, write_labels
from stages.probing.probe_files import read_probe_output
from stages.probing.readouts import Missing, Probabilities, accuracies, predictions, teacher_readouts
from stages.sources.schema import SPLITS, Split, prompt_fit, read_split
from stages.store.reader import open_stores

log = logging.getLogger(__name__)
LABEL_SPLITS = ("labeled", "transfer")
SOURCES = {"probe": "probe", "teacher": "teacher_letter", "cloze": "teacher_cloze"}  # soft_labels -> its readout


@dataclass(frozen=True)
class LabelConfig:
    """`probe.layer`, the only param `label` reads."""

    layer: Literal["auto"] | int = "auto"
    """auto (best cross-validated accuracy, ties to the shallower layer) or a teacher layer index (negative counts
    from the last layer)."""


def select_layer(requested: int | str, layers: list[int], n_teacher_layers: int, cv_acc: list[float]) -> int:
    """Index into `layers` (the probed teacher layers) of the layer to label with."""
    if requested == "auto":
        return best_layer_index(cv_acc, layers)
    resolved = resolve_layer(requested, n_teacher_layers, "probe.layer")
    if resolved not in layers:
        raise InputError(f"probe.layer={requested} (teacher layer {resolved}) was not probed; probed layers: {layers}")
    return layers.index(resolved)


def label_quality(readouts: dict[str, Probabilities | Missing], answers: np.ndarray, layer: int) -> dict[str, Any]:
    """Transfer-set quality of every soft-label source against the hidden gold (dvc shows `probe.acc`, ...)."""
    quality: dict[str, Any] = {}
    for source, readout in SOURCES.items():
        probs = readouts[readout]
        quality[source] = {"available": False} if isinstance(probs, Missing) else {
            **summary(probs["transfer"], answers), "available": True
        }  # fmt: skip
    quality["probe"]["layer"] = layer
    return quality


@dataclass(frozen=True)
class LabelPaths:
    prepared: Path
    """Folder of the prepared splits (all four are read)."""
    hidden: Path
    """Folder of the hidden-state stores (the teacher's letter logits and cloze scores of every split)."""
    probe: Path
    """The probe stage's output folder."""
    out: Path
    """Folder for the label files, quality.json, readouts.json and test_predictions.parquet."""


PARAMS = [Section("probe", LabelConfig, "only probe.layer")]


def read_label_config(params: dict[str, Any]) -> LabelConfig:
    # probe.layer is the only probe param label reads (dvc.yaml lists only it): the other keys are probe's.
    probe = section(params, "probe")
    return build(LabelConfig, {key: probe[key] for key in ("layer",) if key in probe}, "probe")


def run(config: LabelConfig, paths: LabelPaths) -> dict[str, Any]:
    """Write the label files, quality.json, readouts.json and the test predictions; returns the quality."""
    splits = {name: read_split(paths.prepared / f"{name}.parquet") for name in SPLITS}
    tensors, metadata = read_probe_output(paths.probe, splits)
    layers = [int(layer) for layer in tensors["layers"]]
    cv_acc = [accuracy(probs, splits["labeled"].answers) for probs in tensors["labeled"]]
    index = select_layer(config.layer, layers, int(metadata["n_teacher_layers"]), cv_acc)
    layer, temperature = layers[index], float(tensors["temperature"][index])
    log.info("label: probe layer %s (cv accuracy %.3f, temperature %.3g)", layer, cv_acc[index], temperature)
    stores = open_stores(paths.hidden, splits)
    readouts, cloze_temperature = teacher_readouts(stores, splits)
    readouts["probe"] = {name: tensors[name][index] for name in SPLITS}
    teacher = stores["labeled"].attrs.get("teacher")
    provenance: dict[str, dict[str, Any]] = {
        "probe": {"layer": layer, "temperature": temperature, "probe": metadata.get("config")},
        "teacher": {"temperature": 1.0},
        "cloze": {"temperature": cloze_temperature},
    }
    quality = label_quality(readouts, splits["transfer"].answers, layer)
    table = {"layer": layer, **accuracies(readouts, splits), "prompts": prompts_fitted(paths.prepared)}
    for source, readout in SOURCES.items():
        folds = tensors["labeled_fold"] if source == "probe" else None
        write_source(paths.out / f"{source}.parquet", readouts[readout], splits, folds,
                     {"teacher": teacher, "kind": source, **provenance[source]})  # fmt: skip
    test = splits["test"]
    with atomic_path(paths.out / "test_predictions.parquet") as path:
        write_predictions(path, test.ids, test.answers, predictions(readouts, "test"), {"probe_layer": layer})
    write_text_atomic(paths.out / "readouts.json", json.dumps(table, indent=2, sort_keys=True) + "\n")
    write_text_atomic(paths.out / "quality.json", json.dumps(quality, indent=2, sort_keys=True) + "\n")
    log.info("label: wrote %s; readouts %s", paths.out, json.dumps(table))
    return quality


def prompts_fitted(prepared: Path) -> dict[str, int]:
    """How many examples prepare's prompt.on_too_long skipped and truncated, over all splits (for the summary)."""
    notes = [prompt_fit(prepared / f"{name}.parquet") or {} for name in SPLITS]
    return {key: sum(int(note.get(key, 0)) for note in notes) for key in ("skipped", "truncated")}


def write_source(
    path: Path, probs: Probabilities | Missing, splits: dict[str, Split], folds: np.ndarray | None, metadata: dict
) -> None:
    """One source's label file: labeled (with its cross-fitting folds, for the probe) then transfer rows."""
    missing = {"missing": probs.why} if isinstance(probs, Missing) else {}
    tables = [] if isinstance(probs, Missing) else [
        label_table(splits[name].ids, name, probs[name], splits[name].n_choices,
                    layer=metadata.get("layer"), folds=folds if name == "labeled" else None)
        for name in LABEL_SPLITS
    ]  # fmt: skip
    with atomic_path(path) as temp:
        write_labels(tables, temp, {**metadata, "available": not missing, **missing})
