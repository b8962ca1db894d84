"""`summarize`'s inputs and outputs: the arm folders and the label folder in, `data/summary/` out (written at once)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.atomic import atomic_path
from stages.core.errors import InputError
from stages.core.plot_data import write_csv
from stages.core.predictions import read_predictions
from stages.report.summary import TestResults, accuracy_rows, headline, label_rows, summarize

log = logging.getLogger(__name__)
PREDICTIONS = "test_predictions.parquet"


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
    """Each arm's folder (data/students/<arm>): metrics.json and test_predictions.parquet; the arm is its name."""
    labels: Path
    """The label stage's folder: test_predictions.parquet, readouts.json, quality.json."""
    out: Path
    """Folder for metrics.json (headline), details.json (everything), accuracy.csv and labels.csv, replaced
    atomically."""


def read_arms(folders: list[Path]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """({arm: its metrics} of the arms that trained, {arm: why} of those this configuration cannot have)."""
    metrics, unavailable = {}, {}
    for folder in folders:
        loaded = read_json(folder / "metrics.json", required=True, why=f"run `dvc repro train@{folder.name}`")
        if loaded is not None and loaded.get("available") is False:
            unavailable[folder.name] = str(loaded.get("why", "no reason recorded"))
            log.warning("summary: arm %s is unavailable: %s", folder.name, unavailable[folder.name])
            continue
        if loaded is None or "test_acc" not in loaded:
            raise InputError(f"{folder / 'metrics.json'}: no test_acc; rerun train@{folder.name}")
        metrics[folder.name] = loaded
    return metrics, unavailable


def read_results(paths: SummaryPaths) -> TestResults:
    """Per-question correctness of the teacher readouts, the probe and every arm, checked to be the same questions."""
    ids, _, teacher = read_predictions(paths.labels / PREDICTIONS)
    correct = {"teacher": teacher}
    for folder in paths.arms:
        arm_ids, _, correct[folder.name] = read_predictions(folder / PREDICTIONS)
        if arm_ids != ids:
            raise InputError(
                f"{folder / PREDICTIONS}: other test questions than {paths.labels / PREDICTIONS}; "
                f"rerun `dvc repro train@{folder.name}`"
            )
    return TestResults(ids, correct)


def run(paths: SummaryPaths) -> dict[str, Any]:
    """Write the flat summary and the accuracy bar-chart data; returns the summary."""
    arm_metrics, unavailable = read_arms(paths.arms)
    results = read_results(paths)
    readouts = read_json(paths.labels / "readouts.json", required=False, why="run `dvc repro label`")
    quality = read_json(paths.labels / "quality.json", required=False, why="run `dvc repro label`")
    summary = summarize(results, arm_metrics, readouts, quality)
    summary.update({f"{arm}_available": 0 for arm in unavailable})
    arms = [folder.name for folder in paths.arms]
    with atomic_path(paths.out, directory=True) as out:
        # Sorted like every JSON artifact (`dvc metrics show` sorts its columns anyway): each arm's keys stay together.
        (out / "metrics.json").write_text(json.dumps(headline(summary, arms), indent=2, sort_keys=True) + "\n")
        (out / "details.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        header = ["model", "test_acc", "ci_low", "ci_high"]
        write_csv(out / "accuracy.csv", header, accuracy_rows(summary, list(arm_metrics)))
        write_csv(out / "labels.csv", ["source", "acc", "nll", "ece"], label_rows(summary))
    log.info("summary: %s", json.dumps(summary))
    return summary
