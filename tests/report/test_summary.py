"""The summary (stages/report/summary.py): one flat metrics file over every arm, the probe, teacher and labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages.core.errors import InputError
from stages.report.summary import SummaryPaths, accuracy_rows, flatten, read_json, run, summarize
from tests.two_processes import assert_same_bytes_in_two_processes

ARMS = {"gold": 0.41, "logit_kd": 0.52, "probe_kd": 0.63, "hld": 0.44}
PROBE = {"best_layer": 3, "layer": 3, "cv_acc": 0.7, "test_acc": 0.71, "teacher_test_acc": 0.55, "test_nll": 0.9}
QUALITY = {"probe": {"acc": 0.8, "ece": 0.05}, "teacher": {"acc": 0.6, "ece": 0.2}, "layer": 3, "note": "text"}


def write_metrics(root: Path, arms: dict[str, float] = ARMS) -> list[Path]:
    paths = []
    for arm, acc in arms.items():
        path = root / "students" / arm / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"test_acc": acc, "test_nll": 1.0, "val_acc": acc - 0.01, "steps": 3}))
        paths.append(path)
    return paths


def paths_for(root: Path, arms: list[Path]) -> SummaryPaths:
    return SummaryPaths(arms=arms, probe=root / "probe.json", labels=root / "quality.json", out=root / "summary")


def test_summary_is_flat_with_every_model():
    arms = {
        arm: {"test_acc": acc, "test_nll": 1.0, "test_ece": 0.1, "val_acc": 0.5, "steps": 3}
        for arm, acc in ARMS.items()
    }
    summary = summarize(arms, PROBE, QUALITY)
    assert {f"{arm}_test_acc": acc for arm, acc in ARMS.items()}.items() <= summary.items()
    assert summary["gold_test_nll"] == 1.0 and summary["gold_test_ece"] == 0.1 and summary["gold_val_acc"] == 0.5
    assert "gold_steps" not in summary  # only the arm keys that compare arms
    assert summary["probe_test_acc"] == 0.71 and summary["teacher_test_acc"] == 0.55 and summary["probe_layer"] == 3
    assert "probe_cv_acc" not in summary and "probe_test_nll" not in summary
    assert summary["labels_probe_acc"] == 0.8 and summary["labels_teacher_ece"] == 0.2 and summary["labels_layer"] == 3
    assert "labels_note" not in summary
    assert all(not isinstance(value, dict) for value in summary.values())


def test_encoder_teacher_and_missing_quality_are_left_out():
    summary = summarize({"gold": {"test_acc": 0.5}}, {"test_acc": 0.6, "teacher_test_acc": None}, None)
    assert summary == {"gold_test_acc": 0.5, "probe_test_acc": 0.6}
    assert accuracy_rows(summary, ["gold"]) == [("gold", 0.5), ("probe", 0.6)]
    assert summarize({"gold": {"test_acc": 0.5}}, None, None) == {"gold_test_acc": 0.5}


def test_accuracy_rows_keep_the_arm_order_then_probe_and_teacher():
    summary = {"hld_test_acc": 0.4, "gold_test_acc": 0.5, "teacher_test_acc": 0.3, "probe_test_acc": 0.6}
    assert accuracy_rows(summary, ["gold", "hld"]) == [("gold", 0.5), ("hld", 0.4), ("probe", 0.6), ("teacher", 0.3)]


def test_flatten_nested_numbers():
    assert flatten("labels", {"a": {"b": 1, "c": [1, 2]}, "d": True}) == {"labels_a_b": 1, "labels_d": 1.0}
    assert flatten("x", "text") == {} and flatten("x", 2.5) == {"x": 2.5}


def summarize_inputs(root: Path) -> dict:
    """Write every arm's metrics, the probe's and the label quality under `root`, then summarize them."""
    arms = write_metrics(root)
    (root / "probe.json").write_text(json.dumps(PROBE))
    (root / "quality.json").write_text(json.dumps(QUALITY))
    return run(paths_for(root, arms))


def test_run_writes_metrics_and_the_bar_chart(tmp_path: Path):
    summary = summarize_inputs(tmp_path)
    written = json.loads((tmp_path / "summary" / "metrics.json").read_text())
    assert written == summary and list(written) == sorted(summary)  # sorted keys: each arm's together
    assert summary["probe_kd_test_acc"] == 0.63 and summary["labels_probe_ece"] == 0.05
    rows = (tmp_path / "summary" / "accuracy.csv").read_text().splitlines()
    assert rows == [
        "model,test_acc",
        "gold,0.41",
        "logit_kd,0.52",
        "probe_kd,0.63",
        "hld,0.44",
        "probe,0.71",
        "teacher,0.55",
    ]


def test_the_arm_name_is_the_metrics_files_folder(tmp_path: Path):
    arms = write_metrics(tmp_path, {"probe_kd_hld": 0.7, "gold": 0.4})
    summary = run(paths_for(tmp_path, arms))  # no probe or label metrics: left out with a warning
    assert summary == {"probe_kd_hld_test_acc": 0.7, "probe_kd_hld_test_nll": 1.0, "probe_kd_hld_val_acc": 0.69,
                       "gold_test_acc": 0.4, "gold_test_nll": 1.0, "gold_val_acc": 0.39}  # fmt: skip
    assert (tmp_path / "summary" / "accuracy.csv").read_text() == "model,test_acc\nprobe_kd_hld,0.7\ngold,0.4\n"


def test_missing_arm_metrics_is_a_clear_error_and_writes_nothing(tmp_path: Path):
    arms = write_metrics(tmp_path, {"gold": 0.4})
    missing = tmp_path / "students" / "probe_kd_hld" / "metrics.json"
    with pytest.raises(
        InputError, match=r"probe_kd_hld/metrics\.json: not found \(run `dvc repro train@probe_kd_hld`\)$"
    ):
        run(paths_for(tmp_path, [*arms, missing]))
    assert not (tmp_path / "summary").exists()


def test_arm_metrics_without_test_acc(tmp_path: Path):
    [path] = write_metrics(tmp_path, {"hld": 0.4})
    path.write_text(json.dumps({"val_acc": 0.3}))
    with pytest.raises(InputError, match=r"hld/metrics\.json: no test_acc; rerun train@hld$"):
        run(paths_for(tmp_path, [path]))


def test_read_json(tmp_path: Path):
    path = tmp_path / "metrics.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="metrics.json: not valid JSON"):
        read_json(path, required=True, why="")
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match=r"metrics\.json: expected a JSON object$"):
        read_json(path, required=True, why="")
    assert read_json(tmp_path / "absent.json", required=False, why="run it") is None
    with pytest.raises(InputError, match=r"absent\.json: not found \(run it\)$"):
        read_json(tmp_path / "absent.json", required=True, why="run it")


def test_two_processes_write_the_same_bytes(tmp_path: Path):
    code = "import sys; from pathlib import Path; from tests.report.test_summary import summarize_inputs; "
    files = assert_same_bytes_in_two_processes(code + "summarize_inputs(Path(sys.argv[1]))", tmp_path)
    assert {"summary/metrics.json", "summary/accuracy.csv"} <= set(files)
