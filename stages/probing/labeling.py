"""`label`: probe labels and teacher-output labels for `labeled` + `transfer`, and their quality on transfer.

Probe labels come from `data/probe/probs.safetensors` at the layer `probe.layer` picks (nothing is refitted):
out-of-fold for labeled examples, the all-labeled refit for transfer. Teacher labels are the softmax of the
teacher's option-letter logits over each question's valid options (temperature 1), read from the hidden stores;
an encoder teacher has none, so `teacher.parquet` is empty with `available: false`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from stages.core.atomic import atomic_path, write_text_atomic
from stages.core.config import Section, build
from stages.core.errors import InputError
from stages.core.layers import resolve_layer
from stages.core.metrics import accuracy, best_layer_index, masked_softmax, summary
from stages.core.params import section
from stages.probing.label_files import label_table, write_labels
from stages.probing.probe_files import read_probe_output
from stages.sources.schema import Split, read_split
from stages.store.reader import HiddenStore

log = logging.getLogger(__name__)
LABEL_SPLITS = ("labeled", "transfer")


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


def probe_tables(
    probs: dict[str, np.ndarray], splits: dict[str, Split], labeled_fold: np.ndarray, index: int, layer: int
) -> list[pa.Table]:
    """Rows of the probe label file: labeled (out-of-fold, with its fold) then transfer."""
    return [
        label_table(
            splits[name].ids,
            name,
            probs[name][index],
            splits[name].n_choices,
            layer=layer,
            folds=labeled_fold if name == "labeled" else None,
        )
        for name in LABEL_SPLITS
    ]


def teacher_probs(option_logits: np.ndarray, split: Split) -> np.ndarray:
    """(n_examples, MAX_CHOICES) softmax of the letter logits over each question's valid options."""
    valid = split.valid_mask()
    if np.isnan(option_logits[valid]).any():
        raise InputError("teacher option_logits are NaN on a valid option slot; rerun `dvc repro extract`")
    return masked_softmax(option_logits, valid)


def label_quality(probe: np.ndarray, teacher: np.ndarray | None, answers: np.ndarray, layer: int) -> dict[str, Any]:
    """Transfer-set quality of both label sources against the hidden gold (dvc shows `probe.acc`, ...)."""
    quality: dict[str, Any] = {"probe": {**summary(probe, answers), "layer": layer}}
    quality["teacher"] = {"available": False} if teacher is None else {**summary(teacher, answers), "available": True}
    return quality


@dataclass(frozen=True)
class LabelPaths:
    prepared: Path
    """Folder of the prepared splits (labeled and transfer are read)."""
    hidden: Path
    """Folder of the hidden-state stores (the teacher's option logits of labeled and transfer)."""
    probe: Path
    """The probe stage's output folder."""
    out: Path
    """Folder for probe.parquet, teacher.parquet and quality.json."""


PARAMS = [Section("probe", LabelConfig, "only probe.layer")]


def read_label_config(params: dict[str, Any]) -> LabelConfig:
    # probe.layer is the only probe param label reads (dvc.yaml lists only it): the other keys are probe's.
    probe = section(params, "probe")
    return build(LabelConfig, {key: probe[key] for key in ("layer",) if key in probe}, "probe")


def run(config: LabelConfig, paths: LabelPaths) -> dict[str, Any]:
    """Write both label files and quality.json; returns the quality."""
    splits = {name: read_split(paths.prepared / f"{name}.parquet") for name in LABEL_SPLITS}
    tensors, metadata = read_probe_output(paths.probe, splits)
    layers = [int(layer) for layer in tensors["layers"]]
    cv_acc = [accuracy(probs, splits["labeled"].answers) for probs in tensors["labeled"]]
    index = select_layer(config.layer, layers, int(metadata["n_teacher_layers"]), cv_acc)
    layer, temperature = layers[index], float(tensors["temperature"][index])
    log.info("label: probe layer %s (cv accuracy %.3f, temperature %.3g)", layer, cv_acc[index], temperature)

    stores = {name: HiddenStore.open(paths.hidden / f"{name}.zarr") for name in LABEL_SPLITS}
    teacher = stores["labeled"].attrs.get("teacher")
    logits = {name: store.option_logits() for name, store in stores.items()}
    present = {name: value for name, value in logits.items() if value is not None}
    available = len(present) == len(logits)
    teacher_labels = {name: teacher_probs(present[name], split) for name, split in splits.items()} if available else {}
    provenance = {"teacher": teacher, "probe": metadata.get("config")}
    transfer = splits["transfer"]
    quality = label_quality(tensors["transfer"][index], teacher_labels.get("transfer"), transfer.answers, layer)

    with (
        atomic_path(paths.out / "probe.parquet") as probe_path,
        atomic_path(paths.out / "teacher.parquet") as teacher_path,
    ):
        write_labels(
            probe_tables(tensors, splits, tensors["labeled_fold"], index, layer),
            probe_path,
            {**provenance, "kind": "probe", "available": True, "layer": layer, "temperature": temperature},
        )
        tables = [label_table(splits[n].ids, n, teacher_labels[n], splits[n].n_choices) for n in teacher_labels]
        write_labels(
            tables, teacher_path, {"teacher": teacher, "kind": "teacher", "available": available, "temperature": 1.0}
        )
    write_text_atomic(paths.out / "quality.json", json.dumps(quality, indent=2, sort_keys=True) + "\n")
    log.info("label: wrote %s (teacher labels available: %s)", paths.out, available)
    return quality
