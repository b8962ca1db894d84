"""`summarize`: every arm, every teacher readout and the probe on test, with intervals, PGR and paired differences.

Reads each arm's folder (`data/students/<arm>/`: `metrics.json`, `test_predictions.parquet`) and the label folder
(`data/labels/`: `test_predictions.parquet` of the teacher readouts and the probe, `readouts.json`, `quality.json`).
Writes `data/summary/metrics.json`, flat keys that `dvc metrics diff` and `dvc exp show` read as a table:
- `<readout>_test_acc` with `_ci_low` / `_ci_high` for `teacher_letter`, `teacher_cloze`, `teacher_cloze_norm`,
  `probe` (`probe_layer` beside it), and for each arm (letter readout) and `<arm>_test_cloze_acc` (cloze readout);
- `<arm>_pgr`: (arm - gold) / (oracle - gold) on letter accuracy, when both gold and oracle ran and oracle > gold;
- `diff_<a>_minus_<b>` with intervals: probe_kd against logit_kd, cloze_kd and gold, and `diff_probe_minus_best_teacher`
  (the probe against the best teacher readout, the best picked inside every resample);
- `labels_<source>_<metric>`: label quality on transfer, and the arms' `_test_nll`, `_test_ece`, `_val_acc`;
- `prompts_skipped`, `prompts_truncated`: examples prepare's prompt.on_too_long dropped or shortened (all splits);
- `<arm>_available: 0` for an arm this configuration cannot have (its metrics.json says why; collect.py logs it).
Intervals: 95% percentile bootstrap over test questions, all sharing one set of resamples (stages/core/intervals.py).
All of it goes to `data/summary/details.json`; `data/summary/metrics.json`, the one file dvc.yaml registers as
metrics, holds the headline subset (`headline`), so `dvc exp show --only-changed` stays one screen wide.
Also `data/summary/accuracy.csv` (test accuracy per model with its interval) and `labels.csv` (label quality per
source), the bar charts. Reading and writing: collect.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from stages.core.intervals import accuracy_interval, difference_interval, performance_gap_recovered, resample_indices

log = logging.getLogger(__name__)
ARM_KEYS = ("test_nll", "test_ece", "val_acc", "test_cloze_norm_acc")
READOUTS = ("teacher_letter", "teacher_cloze", "teacher_cloze_norm", "probe")
TEACHER_READOUTS = READOUTS[:3]
ARM_READOUTS = {"letter": "test_acc", "cloze": "test_cloze_acc"}  # a student's readout -> its metric name
DIFFERENCES = (("probe_kd", "logit_kd"), ("probe_kd", "cloze_kd"), ("probe_kd", "gold"))


def flatten(prefix: str, value: Any) -> dict[str, float]:
    """Numbers of a nested mapping under `prefix_key_subkey` names; lists and strings are skipped."""
    if isinstance(value, bool):
        return {prefix: float(value)}
    if isinstance(value, (int, float)):
        return {prefix: value}
    if isinstance(value, dict):
        return {k: v for key, inner in value.items() for k, v in flatten(f"{prefix}_{key}", inner).items()}
    return {}


def with_interval(name: str, estimate: tuple[float, float, float]) -> dict[str, float]:
    point, low, high = estimate
    return {name: point, f"{name}_ci_low": low, f"{name}_ci_high": high}


@dataclass(frozen=True)
class TestResults:
    """Per-question correctness on test: `correct[model][readout]` (n_questions,) bool, in one question order."""

    ids: list[str]
    correct: dict[str, dict[str, np.ndarray]]  # "teacher" (its readouts and the probe) or an arm name


def accuracies(results: TestResults, indices: np.ndarray) -> dict[str, float]:
    """Every readout's test accuracy with its interval."""
    summary: dict[str, float] = {}
    for readout in READOUTS:
        if readout in results.correct["teacher"]:
            summary.update(with_interval(f"{readout}_test_acc", accuracy_interval(results.correct["teacher"][readout],
                                                                                   indices)))  # fmt: skip
    for arm, correct in results.correct.items():
        for readout, metric in ARM_READOUTS.items():
            if arm != "teacher" and readout in correct:
                summary.update(with_interval(f"{arm}_{metric}", accuracy_interval(correct[readout], indices)))
    return summary


def differences(results: TestResults, indices: np.ndarray) -> dict[str, float]:
    """The paired differences that matter, for those whose models ran."""
    summary: dict[str, float] = {}
    arms = {
        arm: correct["letter"] for arm, correct in results.correct.items() if arm != "teacher" and "letter" in correct
    }
    for first, second in DIFFERENCES:
        if first in arms and second in arms:
            estimate = difference_interval(arms[first], [arms[second]], indices)
            summary.update(with_interval(f"diff_{first}_minus_{second}", estimate))
    teacher = results.correct["teacher"]
    readouts = [teacher[name] for name in TEACHER_READOUTS if name in teacher]
    if "probe" in teacher and readouts:
        estimate = difference_interval(teacher["probe"], readouts, indices)
        summary.update(with_interval("diff_probe_minus_best_teacher", estimate))
    return summary


def gaps_recovered(summary: dict[str, float], arms: list[str]) -> dict[str, float]:
    """`<arm>_pgr` for every arm, when gold and oracle both ran and the oracle beats gold."""
    if "gold_test_acc" not in summary or "oracle_test_acc" not in summary:
        return {}
    gold, oracle = summary["gold_test_acc"], summary["oracle_test_acc"]
    pgr = {f"{arm}_pgr": performance_gap_recovered(summary[f"{arm}_test_acc"], gold, oracle) for arm in arms}
    if any(value is None for value in pgr.values()):
        log.warning("summary: oracle (%.3f) does not beat gold (%.3f): no performance gap to recover", oracle, gold)
        return {}
    return {name: value for name, value in pgr.items() if value is not None}


def summarize(
    results: TestResults, arm_metrics: dict[str, dict[str, Any]], readouts: dict[str, Any] | None,
    quality: dict[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    """The flat summary (see the module docstring)."""
    indices = resample_indices(len(results.ids))
    summary: dict[str, Any] = accuracies(results, indices)
    if readouts and "layer" in readouts:
        summary["probe_layer"] = readouts["layer"]
    summary.update(flatten("prompts", (readouts or {}).get("prompts", {})))  # prompt.on_too_long's counts
    summary.update(gaps_recovered(summary, list(arm_metrics)))
    summary.update(differences(results, indices))
    for arm, metrics in arm_metrics.items():
        summary.update({f"{arm}_{key}": metrics[key] for key in ARM_KEYS if key in metrics})
    summary.update(flatten("labels", quality or {}))
    return summary


# Every readout and arm on test with its interval, each arm's PGR and the paired differences (issue 11's list); the
# rest (cloze scores of students, NLL, ECE, label quality details, the differences' intervals) is in details.json.
HEADLINE = ("teacher_letter_test_acc", "teacher_cloze_test_acc", "teacher_cloze_norm_test_acc", "probe_test_acc",
            "probe_test_acc_ci_low", "probe_test_acc_ci_high", "probe_layer", "diff_probe_kd_minus_logit_kd",
            "diff_probe_kd_minus_cloze_kd", "diff_probe_kd_minus_gold", "diff_probe_minus_best_teacher",
            "labels_probe_acc", "labels_teacher_acc")  # fmt: skip
ARM_HEADLINE = ("test_acc", "test_acc_ci_low", "test_acc_ci_high", "pgr", "available")


def headline(summary: dict[str, Any], arms: list[str]) -> dict[str, Any]:
    """The keys `dvc metrics show` / `dvc exp show` print: the teacher's readouts and the probe on test, the probe's
    layer, every arm's test accuracy with its 95% interval and PGR (or `<arm>_available: 0`), the paired
    differences, and the probe's and the teacher's label accuracy on transfer."""
    names = [*HEADLINE, *(f"{arm}_{key}" for arm in arms for key in ARM_HEADLINE)]
    return {name: summary[name] for name in sorted(names) if name in summary}


def accuracy_rows(summary: dict[str, Any], arms: list[str]) -> list[tuple[str, float, float, float]]:
    """(model, test accuracy, interval low, high) for the bar chart: each arm, then the probe and the teacher
    readouts when known."""
    names = [f"{name}_test_acc" for name in (*arms, "probe", *TEACHER_READOUTS)]
    return [(name.removesuffix("_test_acc"), summary[name], summary[f"{name}_ci_low"], summary[f"{name}_ci_high"])
            for name in names if name in summary]  # fmt: skip


def label_rows(summary: dict[str, Any]) -> list[tuple[str, float, float, float]]:
    """(source, accuracy, NLL, ECE) of each soft-label source on transfer that the teacher has."""
    sources = ("teacher", "cloze", "probe")
    keys = [f"labels_{source}_{metric}" for source in sources for metric in ("acc", "nll", "ece")]
    return [(source, *(summary[key] for key in keys[3 * i : 3 * i + 3])) for i, source in enumerate(sources)
            if all(key in summary for key in keys[3 * i : 3 * i + 3])]  # fmt: skip
