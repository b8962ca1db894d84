"""The `summarize` stage command: arm folders as arguments, --labels, --out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stages.__main__ import build_app
from tests.report.test_summary import ARMS, write_project


def summarize(root: Path, *arms: str):
    folders = [str(root / f"data/students/{arm}") for arm in arms]
    options = ["--labels", str(root / "data/labels"), "--out", str(root / "data/summary")]
    return CliRunner().invoke(build_app("summarize"), ["summarize", *folders, *options])


def test_the_command_writes_the_flat_summary(tmp_path: Path):
    write_project(tmp_path)
    result = summarize(tmp_path, *ARMS)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "data/summary/metrics.json").read_text())
    assert summary["probe_kd_test_acc"] == 0.75 and summary["probe_kd_pgr"] == pytest.approx(0.25 / 0.4)
    summary = json.loads((tmp_path / "data/summary/details.json").read_text())
    assert summary["diff_probe_kd_minus_logit_kd_ci_low"] < 0.2 < summary["diff_probe_kd_minus_logit_kd_ci_high"]


def test_missing_arm_metrics_is_a_clear_error(tmp_path: Path):
    write_project(tmp_path)
    result = summarize(tmp_path, "gold", "probe_kd_hld")
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert line.endswith("probe_kd_hld/metrics.json: not found (run `dvc repro train@probe_kd_hld`)")
    assert not (tmp_path / "data/summary").exists()


def test_every_path_is_required(tmp_path: Path):
    app = build_app("summarize")
    result = CliRunner().invoke(app, ["summarize", "--labels", "data/labels", "--out", "out"])
    assert result.exit_code == 2 and "Missing argument 'arms'" in result.stderr
    result = CliRunner().invoke(app, ["summarize", "data/students/gold", "--out", "out"])
    assert result.exit_code == 2 and "Missing option '--labels'" in result.stderr


def test_an_unavailable_arm_is_reported_and_left_out_of_comparisons(tmp_path: Path, caplog):
    from stages.core.predictions import read_predictions, write_predictions

    write_project(tmp_path)
    folder = tmp_path / "data/students/logit_kd"
    ids, answers, _ = read_predictions(folder / "test_predictions.parquet")
    write_predictions(folder / "test_predictions.parquet", ids, answers, {"letter": None, "cloze": None}, {})
    why = "teacher bert has no LM head (encoder-only)"
    (folder / "metrics.json").write_text(json.dumps({"available": False, "why": why}))
    result = summarize(tmp_path, *ARMS)
    assert result.exit_code == 0, result.output
    assert f"arm logit_kd is unavailable: {why}" in caplog.text
    assert json.loads((tmp_path / "data/summary/metrics.json").read_text())["logit_kd_available"] == 0
    summary = json.loads((tmp_path / "data/summary/details.json").read_text())
    assert summary["logit_kd_available"] == 0
    assert not any(key.startswith("logit_kd_test") or "minus_logit_kd" in key for key in summary)
    assert summary["probe_kd_test_acc"] == 0.75 and "diff_probe_kd_minus_gold" in summary
    rows = (tmp_path / "data/summary/accuracy.csv").read_text()
    assert "logit_kd" not in rows and "probe_kd" in rows
