"""benchmarks/seed_summary.py: the t-quantiles, the interval, and reading `dvc exp show --json`."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("seed_summary", ROOT / "benchmarks" / "seed_summary.py")
seed_summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seed_summary)


@pytest.mark.parametrize(("df", "quantile"), [(1, 12.706), (4, 2.776), (30, 2.042), (40, 2.021), (60, 2.000),
                                              (120, 1.980), (10_000, 1.960)])  # fmt: skip
def test_t_quantiles_match_the_published_table(df, quantile):
    assert seed_summary.t_quantile(df) == pytest.approx(quantile, abs=1.5e-3)


def test_t_interval_of_five_seeds():
    mean, sd, low, high = seed_summary.t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0 and sd == pytest.approx(math.sqrt(2.5))
    assert high - mean == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5)) and mean - low == high - mean


def record(name: str, metrics: dict | None, experiments: list | None = None) -> dict:
    data = {"rev": name, "params": {"params.yaml": {"data": {"seed": 0}}}}
    if metrics is not None:
        data["metrics"] = {seed_summary.SUMMARY: {"data": metrics}}
    return {"rev": name, "name": name, "data": data, "error": None, "experiments": experiments}


def exp_show() -> list:
    """DVC 3's layout: the workspace, then each commit with its experiments' revisions."""
    runs = [record(f"seed-{s}", {"gold_test_acc": 0.5 + s / 10, "gold_pgr": 0.0, "only_here": 1.0}) for s in range(3)]
    runs[0]["data"]["metrics"][seed_summary.SUMMARY]["data"].pop("only_here")
    experiments = [{"executor": None, "name": run["name"], "revs": [run]} for run in runs]
    return [record("workspace", {"gold_test_acc": 0.9}), record("abc123", {"gold_test_acc": 0.1}, experiments)]


def test_collect_takes_every_experiment_and_the_metrics_they_share():
    used, values = seed_summary.collect(exp_show(), [], seed_summary.DEFAULT_METRICS)
    assert used == ["seed-0", "seed-1", "seed-2"]  # not the workspace or the commit
    assert values == {"gold_test_acc": [0.5, 0.6, 0.7], "gold_pgr": [0.0, 0.0, 0.0]}


def test_collect_by_name_and_the_table():
    used, values = seed_summary.collect(exp_show(), ["seed-2", "workspace"], r"_test_acc$")
    assert used == ["workspace", "seed-2"] and values == {"gold_test_acc": [0.9, 0.7]}
    with pytest.raises(SystemExit, match="no summary metrics for experiment"):
        seed_summary.collect(exp_show(), ["seed-9"], r"_acc$")
    lines = seed_summary.table({"gold_test_acc": [0.5, 0.6, 0.7]}).splitlines()
    assert lines[2].startswith("| `gold_test_acc` | 3 | 0.6000 | 0.1000 | [0.3516, 0.8484] | 0.5000 | 0.7000 |")
