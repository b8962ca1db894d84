"""The real pipeline through `dvc repro`, in a temporary git+DVC repo: the default builtin teacher and student
on smaller splits and a shorter student budget (`SMALL`), so the builtin story can be asserted, not just run.

Also the caching contract: after a full run, changing `probe.layer` reruns `label`, the probe-KD student
and the summary, and nothing else (`fingerprint@<role>` runs on every repro, by design); `dvc metrics diff` then
shows the changed numbers; changing `probe.kind` reruns `probe` too, never extraction. The DVC conventions (the
one metrics file, a fresh clone's baseline, the plots) are tested on the tiny configuration in
tests/test_dvc_conventions.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipeline_repo import ROOT, SMALL, dvc, dvc_json, make_tiny_repo, run, stages_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = make_tiny_repo(tmp_path_factory.mktemp("pipeline"), SMALL)
    dvc("repro", cwd=repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "ran"], repo)
    return repo


def summary(repo: Path) -> dict:
    """Everything the summary holds (details.json; metrics.json, the headline, is a subset of it)."""
    return json.loads((repo / "data/summary/details.json").read_text())


def test_repro_tells_the_builtin_story(repo):
    """At seed 0 the builtin teacher knows more than its letters say: the probe reads it and probe labels beat
    letter labels as a student's targets (margins measured: 42 and 16 points; asserted: 10 and 5)."""
    metrics = summary(repo)
    assert metrics["probe_test_acc"] > metrics["teacher_letter_test_acc"] + 0.10, metrics
    assert metrics["probe_kd_test_acc"] > metrics["logit_kd_test_acc"] + 0.05, metrics
    assert metrics["labels_probe_acc"] > metrics["labels_teacher_acc"], metrics
    for arm in ("gold", "logit_kd", "cloze_kd", "probe_kd", "hld", "oracle"):
        accuracy = metrics[f"{arm}_test_acc"]
        assert metrics[f"{arm}_test_acc_ci_low"] <= accuracy <= metrics[f"{arm}_test_acc_ci_high"]
        assert 0.0 <= metrics[f"{arm}_test_cloze_acc"] <= 1.0
    for readout in ("teacher_letter", "teacher_cloze", "teacher_cloze_norm", "probe"):
        assert 0.0 <= metrics[f"{readout}_test_acc"] <= 1.0
    for difference in (
        "probe_kd_minus_logit_kd",
        "probe_kd_minus_cloze_kd",
        "probe_kd_minus_gold",
        "probe_minus_best_teacher",
    ):
        assert (
            metrics[f"diff_{difference}_ci_low"]
            <= metrics[f"diff_{difference}"]
            <= metrics[f"diff_{difference}_ci_high"]
        )
    if metrics["oracle_test_acc"] > metrics["gold_test_acc"]:  # a few tiny steps may not separate them
        assert metrics["gold_pgr"] == 0.0 and metrics["oracle_pgr"] == 1.0
    store_attrs = json.loads((repo / "data/hidden/test.zarr/zarr.json").read_text())["attributes"]
    assert store_attrs["complete"] is True and store_attrs["n_examples"] == SMALL["data"]["test"]
    assert store_attrs["has_cloze"] is True


def test_second_repro_is_a_no_op(repo):
    assert stages_run(dvc("repro", cwd=repo)) == set()


def test_probe_layer_change_reruns_only_label_probe_kd_and_summary(repo):
    before = json.loads((repo / "data/summary/metrics.json").read_text())
    best = json.loads((repo / "data/probe/metrics.json").read_text())["best_layer"]
    other = 1 if best != 1 else 2  # any layer but the one `auto` picked
    output = dvc("exp", "run", "-S", f"probe.layer={other}", cwd=repo)
    assert stages_run(output) == {"label", "train@probe_kd", "summarize"}, output
    after = json.loads((repo / "data/summary/metrics.json").read_text())
    assert after != before
    diff = dvc_json("metrics", "diff", cwd=repo)
    assert "probe_layer" in diff["data/summary/metrics.json"], diff


def test_probe_kind_change_reruns_only_probe_label_probe_kd_and_summary(repo):
    """The stores always hold the per-option states (extract.option_states: true), so a kind change never reruns
    extraction."""
    output = dvc("exp", "run", "-S", "probe.kind=per_option", cwd=repo)
    assert stages_run(output) == {"probe", "label", "train@probe_kd", "summarize"}, output
    metrics = json.loads((repo / "data/probe/metrics.json").read_text())
    assert 0.0 <= metrics["cv_acc"] <= 1.0


def test_sweep_table_reads_dvc_exp_show(repo):
    import importlib.util

    spec = importlib.util.spec_from_file_location("plot_sweep", ROOT / "benchmarks" / "plot_sweep.py")
    plot_sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_sweep)
    table = plot_sweep.sweep_table(dvc_json("exp", "show", cwd=repo))
    assert set(table) == {SMALL["data"]["labeled"]}
    assert set(table[SMALL["data"]["labeled"]]) == set(plot_sweep.ARMS)


def test_seed_summary_reads_dvc_exp_show(repo):
    """The across-seeds command on the real `dvc exp show --json` (the probe.layer and probe.kind experiments above
    are its runs)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("seed_summary", ROOT / "benchmarks" / "seed_summary.py")
    seed_summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed_summary)
    used, values = seed_summary.collect(dvc_json("exp", "show", cwd=repo), [], seed_summary.DEFAULT_METRICS)
    assert len(used) == 2 and {"probe_kd_test_acc", "teacher_cloze_test_acc", "diff_probe_kd_minus_logit_kd"} <= set(
        values
    )
