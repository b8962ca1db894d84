"""Write probe labels and teacher-output labels for `labeled` + `transfer`; measure their quality on transfer.

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
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import typer
from safetensors import safe_open
from safetensors.numpy import load_file

from stages.atomic import atomic_path, write_text_atomic
from stages.errors import InputError, exits_cleanly
from stages.hidden_store import HiddenStore
from stages.labels_io import label_table, write_labels
from stages.metrics import accuracy, best_layer_index, masked_softmax, summary
from stages.params import load_params, section
from stages.schema import Split, read_split

log = logging.getLogger(__name__)
LABEL_SPLITS = ("labeled", "transfer")


@dataclass(frozen=True)
class LabelConfig:
    """`probe.layer`, the only param `label` reads."""

    layer: int | str = "auto"
    """auto (best cross-validated accuracy, ties to the shallower layer) or a teacher layer index (negative counts
    from the last layer)."""

    def __post_init__(self) -> None:
        if self.layer != "auto" and (isinstance(self.layer, bool) or not isinstance(self.layer, int)):
            raise InputError(f"probe.layer={self.layer!r}; use auto or an integer teacher layer index")

    @classmethod
    def from_params(cls, params: dict) -> LabelConfig:
        return cls(layer=section(params, "probe")["layer"])


def select_layer(requested: int | str, layers: list[int], n_teacher_layers: int, cv_acc: list[float]) -> int:
    """Index into `layers` (the probed teacher layers) of the layer to label with."""
    if requested == "auto":
        return best_layer_index(cv_acc, layers)
    layer = int(requested)
    resolved = layer + n_teacher_layers if layer < 0 else layer
    if not 0 <= resolved < n_teacher_layers:
        raise InputError(
            f"probe.layer={layer} but the teacher has layers 0..{n_teacher_layers - 1} "
            f"(or -{n_teacher_layers}..-1 from the last); use one of those or auto"
        )
    if resolved not in layers:
        raise InputError(f"probe.layer={layer} (teacher layer {resolved}) was not probed; probed layers: {layers}")
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


def read_probe_output(probe_dir: Path, splits: dict[str, Split]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    path = probe_dir / "probs.safetensors"
    if not path.exists():
        raise InputError(f"{path}: probe output not found (run `dvc repro probe` first)")
    with safe_open(str(path), framework="numpy") as handle:
        metadata = {key: json.loads(value) for key, value in (handle.metadata() or {}).items()}
    tensors = load_file(str(path))
    for name in LABEL_SPLITS:
        if metadata.get("example_ids", {}).get(name) != splits[name].ids:
            raise InputError(f"{path}: {name} example ids differ from the prepared split; rerun `dvc repro probe`")
    return tensors, metadata


@exits_cleanly
def main(
    prepared: Annotated[Path, typer.Option(help="Folder of the prepared split parquet files.")] = Path("data/prepared"),
    hidden: Annotated[Path, typer.Option(help="Folder of the hidden-state stores (option logits).")] = Path(
        "data/hidden"
    ),
    probe_dir: Annotated[Path, typer.Option(help="Output folder of the probe stage.")] = Path("data/probe"),
    out: Annotated[Path, typer.Option(help="Folder for probe.parquet, teacher.parquet, quality.json.")] = Path(
        "data/labels"
    ),
    params_file: Annotated[Path, typer.Option(help="Parameters file (reads probe.layer).")] = Path("params.yaml"),
) -> None:
    """Write probe labels and teacher-output labels; measure their quality."""
    config = LabelConfig.from_params(load_params("label", params_file))
    splits = {name: read_split(prepared / f"{name}.parquet") for name in LABEL_SPLITS}
    tensors, metadata = read_probe_output(probe_dir, splits)
    layers = [int(layer) for layer in tensors["layers"]]
    cv_acc = [accuracy(probs, splits["labeled"].answers) for probs in tensors["labeled"]]
    index = select_layer(config.layer, layers, int(metadata["n_teacher_layers"]), cv_acc)
    layer, temperature = layers[index], float(tensors["temperature"][index])
    log.info("label: probe layer %s (cv accuracy %.3f, temperature %.3g)", layer, cv_acc[index], temperature)

    stores = {name: HiddenStore.open(hidden / f"{name}.zarr") for name in LABEL_SPLITS}
    teacher = stores["labeled"].attrs.get("teacher")
    logits = {name: store.option_logits() for name, store in stores.items()}
    available = all(value is not None for value in logits.values())
    teacher_labels = {name: teacher_probs(logits[name], split) for name, split in splits.items()} if available else {}
    provenance = {"teacher": teacher, "probe": metadata.get("config")}
    transfer = splits["transfer"]
    quality = label_quality(tensors["transfer"][index], teacher_labels.get("transfer"), transfer.answers, layer)

    with atomic_path(out / "probe.parquet") as probe_path, atomic_path(out / "teacher.parquet") as teacher_path:
        write_labels(
            probe_tables(tensors, splits, tensors["labeled_fold"], index, layer),
            probe_path,
            {**provenance, "kind": "probe", "available": True, "layer": layer, "temperature": temperature},
        )
        tables = [label_table(splits[n].ids, n, teacher_labels[n], splits[n].n_choices) for n in teacher_labels]
        write_labels(
            tables, teacher_path, {"teacher": teacher, "kind": "teacher", "available": available, "temperature": 1.0}
        )
    write_text_atomic(out / "quality.json", json.dumps(quality, indent=2) + "\n")
    log.info("label: wrote %s (teacher labels available: %s)", out, available)
