"""The summary (stages/report/summary.py, collect.py): accuracies with intervals, PGR, paired differences, flat."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stages.core.errors import InputError
from stages.core.predictions import write_predictions
from stages.report.collect import SummaryPaths, read_json, run
from stages.report.summary import accuracy_rows, flatten

N_TEST = 200
TEACHER = {"teacher_letter": 0.55, "teacher_cloze": 0.65, "teacher_cloze_norm": 0.6, "probe": 0.8}
ARMS = {"gold": 0.5, "logit_kd": 0.55, "cloze_kd": 0.6, "probe_kd": 0.75, "hld": 0.5, "oracle": 0.9}
QUALITY = {"probe": {"acc": 0.8, "nll": 0.5, "ece": 0.05}, "teacher": {"acc": 0.6, "nll": 0.9, "ece": 0.2},
           "cloze": {"available": False}}  # fmt: skip


def picks(answers: np.ndarray, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic classifier's picks: right on a random `accuracy` share of the questions, else the next option."""
    right = np.zeros(len(answers), dtype=bool)
    right[rng.permutation(len(answers))[: round(accuracy * len(answers))]] = True
    return np.where(right, answers, (answers + 1) % 4)


def write_project(root: Path, arms: dict[str, float] = ARMS, teacher: dict[str, float | None] = TEACHER) -> Path:
    """data/labels and data/students/<arm> as the pipeline lays them out, with known test accuracies."""
    rng = np.random.default_rng(0)
    ids, answers = [f"test-{i}" for i in range(N_TEST)], rng.integers(0, 4, N_TEST)
    labels = root / "data/labels"
    labels.mkdir(parents=True)
    readouts = {name: None if acc is None else picks(answers, acc, rng) for name, acc in teacher.items()}
    write_predictions(labels / "test_predictions.parquet", ids, answers, readouts, {})
    (labels / "quality.json").write_text(json.dumps(QUALITY))
    (labels / "readouts.json").write_text(json.dumps({"layer": 3, "probe": {"test_acc": teacher["probe"]}}))
    for arm, accuracy in arms.items():
        folder = root / f"data/students/{arm}"
        folder.mkdir(parents=True)
        metrics = {"test_acc": accuracy, "test_nll": 1.0, "test_ece": 0.1, "val_acc": 0.5, "test_cloze_norm_acc": 0.3}
        (folder / "metrics.json").write_text(json.dumps({**metrics, "steps": 3}))
        arm_picks = {"letter": picks(answers, accuracy, rng), "cloze": picks(answers, 0.4, rng), "cloze_norm": None}
        write_predictions(folder / "test_predictions.parquet", ids, answers, arm_picks, {"arm": arm})
    return root


def summarize(root: Path, arms=ARMS) -> dict:
    arm_folders = [root / f"data/students/{arm}" for arm in arms]
    return run(SummaryPaths(arms=arm_folders, labels=root / "data/labels", out=root / "data/summary"))


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> dict:
    return summarize(write_project(tmp_path_factory.mktemp("summary")))


def test_every_readout_and_arm_has_its_accuracy_and_interval(summary):
    for name, accuracy in {**TEACHER, **ARMS}.items():
        point, low, high = (summary[f"{name}_test_acc{end}"] for end in ("", "_ci_low", "_ci_high"))
        assert point == pytest.approx(accuracy)
        assert low < point < high and high - low < 0.2  # n = 200: a 95% interval about +-6 points wide
    assert summary["gold_test_cloze_acc"] == pytest.approx(0.4) and "gold_test_cloze_acc_ci_low" in summary
    assert "gold_test_cloze_norm_acc_ci_low" not in summary and summary["gold_test_cloze_norm_acc"] == 0.3
    assert summary["probe_layer"] == 3 and summary["gold_test_nll"] == 1.0 and "gold_steps" not in summary
    assert all(not isinstance(value, dict) for value in summary.values())


def test_pgr_is_zero_for_gold_and_one_for_the_oracle_by_construction(summary):
    assert summary["gold_pgr"] == 0.0 and summary["oracle_pgr"] == 1.0
    assert summary["probe_kd_pgr"] == pytest.approx((0.75 - 0.5) / (0.9 - 0.5))
    assert summary["hld_pgr"] == pytest.approx(0.0)


def test_paired_differences_that_matter(summary):
    expected = {"diff_probe_kd_minus_logit_kd": 0.2, "diff_probe_kd_minus_cloze_kd": 0.15,
                "diff_probe_kd_minus_gold": 0.25, "diff_probe_minus_best_teacher": 0.8 - 0.65}  # fmt: skip
    for name, difference in expected.items():
        assert summary[name] == pytest.approx(difference)
        assert summary[f"{name}_ci_low"] < summary[name] < summary[f"{name}_ci_high"]


def test_the_done_when_names_are_flat_and_stable(summary):
    names = ["teacher_letter_test_acc", "teacher_cloze_test_acc", "teacher_cloze_norm_test_acc", "probe_test_acc"]
    for arm in ARMS:
        names += [f"{arm}_test_acc", f"{arm}_test_acc_ci_low", f"{arm}_test_acc_ci_high", f"{arm}_pgr"]
    assert set(names) <= set(summary)
    assert summary["labels_probe_acc"] == 0.8 and summary["labels_cloze_available"] == 0.0


def test_without_an_oracle_there_is_no_pgr_and_missing_readouts_are_left_out(tmp_path: Path):
    arms = {"gold": 0.5, "probe_kd": 0.7}
    teacher = {"teacher_letter": None, "teacher_cloze": None, "teacher_cloze_norm": None, "probe": 0.8}  # encoder
    summary = summarize(write_project(tmp_path, arms, teacher), arms)
    assert not any(name.endswith("_pgr") for name in summary)
    assert "teacher_letter_test_acc" not in summary and "diff_probe_minus_best_teacher" not in summary
    assert summary["diff_probe_kd_minus_gold"] == pytest.approx(0.2) and "diff_probe_kd_minus_logit_kd" not in summary


def test_no_pgr_when_the_oracle_does_not_beat_gold(tmp_path: Path, caplog):
    arms = {"gold": 0.6, "oracle": 0.55}
    summary = summarize(write_project(tmp_path, arms), arms)
    assert "gold_pgr" not in summary and "does not beat gold" in caplog.text


def test_the_files_headline_details_and_bar_charts(tmp_path: Path):
    summary = summarize(write_project(tmp_path))
    assert json.loads((tmp_path / "data/summary/details.json").read_text()) == summary
    metrics = json.loads((tmp_path / "data/summary/metrics.json").read_text())
    assert metrics == {key: summary[key] for key in metrics}  # the headline: a subset, under the same names
    per_arm = {f"{arm}_{key}" for arm in ARMS for key in ("test_acc", "test_acc_ci_low", "test_acc_ci_high", "pgr")}
    assert set(metrics) == per_arm | {
        "teacher_letter_test_acc", "teacher_cloze_test_acc", "teacher_cloze_norm_test_acc", "probe_test_acc",
        "probe_test_acc_ci_low", "probe_test_acc_ci_high", "probe_layer", "diff_probe_kd_minus_logit_kd",
        "diff_probe_kd_minus_cloze_kd", "diff_probe_kd_minus_gold", "diff_probe_minus_best_teacher",
        "labels_probe_acc", "labels_teacher_acc"}  # fmt: skip
    assert not any(key.startswith("diff_") and "_ci_" in key for key in metrics)  # those are in details.json
    rows = (tmp_path / "data/summary/accuracy.csv").read_text().splitlines()
    assert rows[0] == "model,test_acc,ci_low,ci_high" and rows[1].startswith("gold,0.5,")
    assert [row.split(",")[0] for row in rows[1:]] == [*ARMS, "probe", "teacher_letter", "teacher_cloze",
                                                       "teacher_cloze_norm"]  # fmt: skip
    low, high = (float(value) for value in rows[1].split(",")[2:])
    assert low < 0.5 < high
    summary_rows = {"hld_test_acc": 0.4, "hld_test_acc_ci_low": 0.3, "hld_test_acc_ci_high": 0.5}
    assert accuracy_rows(summary_rows, ["gold", "hld"]) == [("hld", 0.4, 0.3, 0.5)]
    labels = (tmp_path / "data/summary/labels.csv").read_text().splitlines()
    assert labels[0] == "source,acc,nll,ece" and [row.split(",")[0] for row in labels[1:]] == ["teacher", "probe"]


def test_other_test_questions_are_refused(tmp_path: Path):
    write_project(tmp_path)
    folder = tmp_path / "data/students/hld"
    write_predictions(folder / "test_predictions.parquet", ["x"], np.array([0]), {"letter": np.array([0])}, {})
    with pytest.raises(InputError, match=r"hld/test_predictions.parquet: other test questions than .*rerun"):
        summarize(tmp_path)
    assert not (tmp_path / "data/summary").exists()


def test_missing_arm_metrics_is_a_clear_error_and_writes_nothing(tmp_path: Path):
    write_project(tmp_path, {"gold": 0.4})
    with pytest.raises(
        InputError, match=r"probe_kd_hld/metrics\.json: not found \(run `dvc repro train@probe_kd_hld`\)$"
    ):
        summarize(tmp_path, ["gold", "probe_kd_hld"])
    (tmp_path / "data/students/gold/metrics.json").write_text(json.dumps({"val_acc": 0.3}))
    with pytest.raises(InputError, match=r"gold/metrics\.json: no test_acc; rerun train@gold$"):
        summarize(tmp_path, ["gold"])
    assert not (tmp_path / "data/summary").exists()


def test_flatten_nested_numbers():
    assert flatten("labels", {"a": {"b": 1, "c": [1, 2]}, "d": True}) == {"labels_a_b": 1, "labels_d": 1.0}
    assert flatten("x", "text") == {} and flatten("x", 2.5) == {"x": 2.5}


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
