"""`pretrain_summary`: the arms' evaluations in one flat file for `dvc metrics show/diff`, with 95% percentile
bootstrap intervals over test questions for the downstream accuracies (resampled jointly across arms)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stages.core.atomic import write_text_atomic
from stages.core.errors import InputError
from stages.core.intervals import accuracy_interval, resample_indices
from stages.pretraining.config import ARMS


def summarize(evaluations: list[Path], out: Path) -> dict[str, float]:
    """Flat keys `<arm>_val_logppl`, `<arm>_downstream_acc` (+ `_ci_low/_ci_high`), `<arm>_train_flops`,
    `<arm>_train_tokens`, `<arm>_val_logppl_bucket<i>`, and `<arm>_minus_nll_val_logppl`; written atomically."""
    metrics: dict[str, float] = {}
    found = {}
    for path in evaluations:
        if not path.exists():
            raise InputError(f"{path}: arm evaluation not found (run `dvc repro pretrain_eval` first)")
        result = json.loads(path.read_text())
        found[result["arm"]] = result
    indices = None
    for arm in [a for a in ARMS if a in found] + sorted(set(found) - set(ARMS)):
        result = found[arm]
        for key, value in result.items():
            if key not in ("arm", "downstream_correct"):
                metrics[f"{arm}_{key}"] = value
        correct = np.asarray(result["downstream_correct"], dtype=bool)
        if len(correct):
            indices = resample_indices(len(correct)) if indices is None else indices  # paired across arms
            _, low, high = accuracy_interval(correct, indices)
            metrics[f"{arm}_downstream_acc_ci_low"], metrics[f"{arm}_downstream_acc_ci_high"] = low, high
    if "nll" in found:
        for arm in found:
            if arm != "nll":
                metrics[f"{arm}_minus_nll_val_logppl"] = found[arm]["val_logppl"] - found["nll"]["val_logppl"]
    write_text_atomic(out, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
