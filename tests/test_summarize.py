"""The `summarize` stage command: metrics.json per arm as arguments, --probe, --labels, --out."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from stages.__main__ import build_app

ARMS = {"gold": 0.41, "logit_kd": 0.52, "probe_kd": 0.63, "hld": 0.44}
PROBE = {"best_layer": 3, "layer": 3, "cv_acc": 0.7, "test_acc": 0.71, "teacher_test_acc": 0.55, "test_nll": 0.9}
QUALITY = {"probe": {"acc": 0.8, "ece": 0.05}, "teacher": {"acc": 0.6, "ece": 0.2}, "layer": 3, "note": "text"}


def write_project(root: Path, probe: dict | None = PROBE, quality: dict | None = QUALITY) -> None:
    """The layout dvc.yaml uses: data/students/<arm>/metrics.json, data/probe/metrics.json, data/labels/quality.json."""
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


def summarize(root: Path, *arms: str):
    metrics = [str(root / f"data/students/{arm}/metrics.json") for arm in arms]
    options = ["--probe", str(root / "data/probe/metrics.json"), "--labels", str(root / "data/labels/quality.json")]
    return CliRunner().invoke(
        build_app("summarize"), ["summarize", *metrics, *options, "--out", str(root / "data/summary")]
    )


def test_summary_is_flat_with_every_model(tmp_path: Path):
    write_project(tmp_path)
    result = summarize(tmp_path, *ARMS)
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


def test_missing_probe_and_label_metrics_are_left_out(tmp_path: Path):
    write_project(tmp_path, probe=None, quality=None)
    result = summarize(tmp_path, "gold", "hld")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "data/summary/metrics.json").read_text())
    assert set(summary) == {
        "gold_test_acc",
        "gold_test_nll",
        "gold_val_acc",
        "hld_test_acc",
        "hld_test_nll",
        "hld_val_acc",
    }


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
    result = CliRunner().invoke(app, ["summarize", "--probe", "p.json", "--labels", "q.json", "--out", "out"])
    assert result.exit_code == 2 and "Missing argument 'arms'" in result.stderr
    result = CliRunner().invoke(app, ["summarize", "m.json", "--labels", "q.json", "--out", "out"])
    assert result.exit_code == 2 and "Missing option '--probe'" in result.stderr
