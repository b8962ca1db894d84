"""`summarize`: every arm's test accuracy, the teacher's and the probe's, and label quality in one metrics file.

Reads `data/students/<arm>/metrics.json` (written by `train`), `data/probe/metrics.json` (`test_acc` and
`best_layer` of the probe at the best cross-validated layer; `teacher_test_acc`, the teacher's own letter
accuracy, absent for an encoder teacher) and `data/labels/quality.json` (any nesting; its numbers are copied
under `labels_<path>`). Writes `data/summary/metrics.json` (flat keys, so `dvc metrics diff` and
`dvc exp show` read as a table) and `data/summary/accuracy.csv` (test accuracy per model, a bar chart).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.atomic import atomic_path
from stages.core.errors import InputError
from stages.core.plot_data import write_csv

log = logging.getLogger(__name__)
ARM_KEYS = ("test_acc", "test_nll", "test_ece", "val_acc")
PROBE_KEYS = {"test_acc": "probe_test_acc", "best_layer": "probe_layer", "teacher_test_acc": "teacher_test_acc"}


def flatten(prefix: str, value: Any) -> dict[str, float]:
    """Numbers of a nested mapping under `prefix_key_subkey` names; lists and strings are skipped."""
    if isinstance(value, bool):
        return {prefix: float(value)}
    if isinstance(value, (int, float)):
        return {prefix: value}
    if isinstance(value, dict):
        return {k: v for key, inner in value.items() for k, v in flatten(f"{prefix}_{key}", inner).items()}
    return {}


def summarize(
    arm_metrics: dict[str, dict[str, Any]], probe_metrics: dict[str, Any] | None, quality: dict[str, Any] | None
) -> dict[str, Any]:
    """Flat summary: `<arm>_test_acc` (and nll, ece, val acc) per arm, teacher and probe accuracy, label quality."""
    summary: dict[str, Any] = {}
    for arm, metrics in arm_metrics.items():
        summary.update({f"{arm}_{key}": metrics[key] for key in ARM_KEYS if key in metrics})
    for key, name in PROBE_KEYS.items():
        if probe_metrics and probe_metrics.get(key) is not None:
            summary[name] = probe_metrics[key]
    summary.update(flatten("labels", quality or {}))
    return summary


def accuracy_rows(summary: dict[str, Any], arms: list[str]) -> list[tuple[str, float]]:
    """(model, test accuracy) for the bar chart: each arm, then the probe and the teacher when known."""
    names = [*arms, "probe", "teacher"]
    return [(name, summary[f"{name}_test_acc"]) for name in names if f"{name}_test_acc" in summary]


def read_json(path: Path, *, required: bool, why: str) -> dict[str, Any] | None:
    if not path.exists():
        if required:
            raise InputError(f"{path}: not found ({why})")
        log.warning("%s: not found; the summary leaves it out (%s)", path, why)
        return None
    try:
        loaded = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: expected a JSON object")
    return loaded


@dataclass(frozen=True)
class SummaryPaths:
    arms: list[Path]
    """Each arm's metrics.json; the arm's name is its folder's (data/students/<arm>/metrics.json)."""
    probe: Path
    """The probe stage's metrics.json."""
    labels: Path
    """The label stage's quality.json."""
    out: Path
    """Folder for metrics.json and accuracy.csv, replaced atomically."""


def run(paths: SummaryPaths) -> dict[str, Any]:
    """Write the flat summary and the accuracy bar-chart data; returns the summary."""
    arm_metrics = {}
    for path in paths.arms:
        arm = path.parent.name
        metrics = read_json(path, required=True, why=f"run `dvc repro train@{arm}`")
        if metrics is None or "test_acc" not in metrics:
            raise InputError(f"{path}: no test_acc; rerun train@{arm}")
        arm_metrics[arm] = metrics
    probe = read_json(paths.probe, required=False, why="run `dvc repro probe`")
    quality = read_json(paths.labels, required=False, why="run `dvc repro label`")
    summary = summarize(arm_metrics, probe, quality)
    with atomic_path(paths.out, directory=True) as out:
        # Sorted like every JSON artifact (`dvc metrics show` sorts its columns anyway): each arm's keys stay together.
        (out / "metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        write_csv(out / "accuracy.csv", ["model", "test_acc"], accuracy_rows(summary, list(arm_metrics)))
    log.info("summary: %s", json.dumps(summary))
    return summary
