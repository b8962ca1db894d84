"""An arm this configuration cannot have (logit KD from an encoder teacher, HLD with a student that exposes no
hidden states, ...): its folder is still written, saying so, so `summarize` reports it and `dvc repro` finishes.

Every output dvc.yaml declares for an arm exists: `metrics.json` (`available: false` and why), test predictions
with null readouts (what `summarize` reads as unavailable), header-only plot files, and `model/UNAVAILABLE.txt`
in place of a student.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.atomic import atomic_path
from stages.core.plot_data import write_csv
from stages.core.predictions import write_predictions
from stages.sources.schema import read_split
from stages.student.config import TrainPaths, TrainSetup

log = logging.getLogger(__name__)
READOUTS = ("letter", "cloze", "cloze_norm")  # the columns of a trained arm's test predictions


def unavailable_metrics(why: str) -> dict[str, Any]:
    return {"available": False, "why": why}


def write_unavailable(setup: TrainSetup, paths: TrainPaths, why: str) -> dict[str, Any]:
    """Write the arm's folder for an arm that cannot run here; returns its metrics."""
    log.warning("%s: unavailable, recorded as such: %s", setup.arm, why)
    metrics = unavailable_metrics(why)
    test = read_split(paths.prepared / "test.parquet")
    with atomic_path(paths.out, directory=True) as out:
        (out / "model").mkdir(parents=True)
        (out / "model" / "UNAVAILABLE.txt").write_text(f"arm {setup.arm} did not train: {why}\n")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        answers = np.asarray(test.answers, dtype=np.int64)
        readouts: dict[str, np.ndarray | None] = dict.fromkeys(READOUTS)
        write_predictions(out / "test_predictions.parquet", test.ids, answers, readouts, {"arm": setup.arm})
        write_empty_plots(out)
    return metrics


def write_empty_plots(out: Path) -> None:
    """Header-only plot files, so the arm's declared plots exist (and draw nothing)."""
    curves = out / "live" / "plots" / "metrics" / "val"
    curves.mkdir(parents=True)
    (curves / "acc.tsv").write_text("step\tacc\n")
    write_csv(out / "calibration.csv", ["confidence", "accuracy", "n_examples"], [])
    write_csv(out / "confusion.csv", ["actual", "predicted"], [])
