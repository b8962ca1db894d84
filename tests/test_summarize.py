"""The summary: one flat metrics file over every arm, the probe, the teacher and the label quality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stages.errors import InputError
from stages.summarize import accuracy_rows, flatten, main, summarize

ARMS = {"gold": 0.41, "logit_kd": 0.52, "probe_kd": 0.63, "hld": 0.44}
PROBE = {"best_layer": 3, "layer": 3, "cv_acc": 0.7, "test_acc": 0.71, "teacher_test_acc": 0.55, "test_nll": 0.9}
QUALITY = {"probe": {"acc": 0.8, "ece": 0.05}, "teacher": {"acc": 0.6, "ece": 0.2}, "layer": 3, "note": "text"}


def write_project(root: Path, probe: dict | None = PROBE, quality: dict | None = QUALITY) -> None:
    for arm, acc in ARMS.items():
        folder = root / f"data/students/{arm}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"test_acc": acc, "test_nll": 1.0, "val_acc": acc - 0.01}))
    if probe is not None:
        (root / "data/probe").mkdir(parents=True)
        (root / "data/probe/metrics.json").write_text(json.dumps(probe))
    if quality is not None:
        (root / "data/labels").mkdir(parents=True)
        (root / "data/labels/quality.json").write_text(json.dumps(quality))


def run(root: Path, *arms: str):
    import typer

    app = typer.Typer()
    app.command()(main)
    return CliRunner().invoke(app, [*arms, "--root", str(root)])


def test_summary_is_flat_with_every_model(tmp_path: Path):
    write_project(tmp_path)
    result = run(tmp_path, *ARMS)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "data/summary/metrics.json").read_text())
    assert {f"{arm}_test_acc": acc for arm, acc in ARMS.items()}.items() <= summary.items()
    assert summary["probe_test_acc"] == 0.71 and summary["teacher_test_acc"] == 0.55 and summary["probe_layer"] == 3
    assert summary["labels_probe_acc"] == 0.8 and summary["labels_teacher_ece"] == 0.2
    assert "labels_note" not in summary
    assert all(not isinstance(value, dict) for value in summary.values())
    rows = (tmp_path / "data/summary/accuracy.csv").read_text().splitlines()
    assert rows == [
        "model,test_acc",
        "gold,0.41",
        "logit_kd,0.52",
        "probe_kd,0.63",
        "hld,0.44",
        "probe,0.71",
        "teacher,0.55",
    ]


def test_encoder_teacher_and_missing_quality_are_left_out():
    summary = summarize({"gold": {"test_acc": 0.5}}, {"test_acc": 0.6, "teacher_test_acc": None}, None)
    assert summary == {"gold_test_acc": 0.5, "probe_test_acc": 0.6}
    assert accuracy_rows(summary, ["gold"]) == [("gold", 0.5), ("probe", 0.6)]


def test_flatten_nested_numbers():
    assert flatten("labels", {"a": {"b": 1, "c": [1, 2]}, "d": True}) == {"labels_a_b": 1, "labels_d": 1.0}


def test_missing_arm_metrics_is_a_clear_error(tmp_path: Path):
    write_project(tmp_path)
    result = run(tmp_path, "gold", "probe_kd_hld")
    assert result.exit_code == 2
    assert "probe_kd_hld/metrics.json: not found (run `dvc repro train@probe_kd_hld`)" in result.output
    assert not (tmp_path / "data/summary").exists()


def test_invalid_json_names_the_file(tmp_path: Path):
    from stages.summarize import read_json

    path = tmp_path / "metrics.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="metrics.json: not valid JSON"):
        read_json(path, required=True, why="")
