"""The pre-training study through `dvc repro pretrain_summary` in a temporary git+DVC repo (tiny configuration):
the summary's flat keys and the curves exist; a second repro is a no-op; changing `pretrain.hld.gamma` reruns the
HLD arms (training and evaluation) and the summary, nothing else, and `dvc metrics diff` sees it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipeline_repo import dvc, dvc_json, make_tiny_repo, run, stages_run

pytestmark = pytest.mark.slow
ARMS = ("nll", "kd", "hldc", "hldf")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = make_tiny_repo(tmp_path_factory.mktemp("pretrain"))
    dvc("repro", "pretrain_summary", cwd=repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "ran the study"], repo)
    return repo


def test_repro_writes_the_summary_and_the_curves(repo):
    metrics = json.loads((repo / "data/pretrain/summary/metrics.json").read_text())
    for arm in ARMS:
        assert 0 < metrics[f"{arm}_val_logppl"] < 10, metrics
        assert 0 <= metrics[f"{arm}_downstream_acc"] <= 1
        assert metrics[f"{arm}_train_flops"] > 0
        curve = json.loads((repo / f"data/pretrain/students/{arm}/live/plots/custom/val_logppl.json").read_text())
        assert [point["tokens"] for point in curve] == [2 * 8 * 32, 4 * 8 * 32]
    # budget: tokens, so every arm saw the same tokens and the distilling arms pay the teacher's forward too
    assert metrics["kd_train_flops"] > metrics["nll_train_flops"]
    shown = dvc_json("plots", "show", cwd=repo)
    plots, errors = shown["data"], {error["name"] for error in shown.get("errors") or []}
    for x in ("tokens", "FLOPs"):
        name = f"pre-training, validation log-perplexity against {x}"
        assert name in plots and name not in errors, (list(plots), errors)
    assert not {name for name in errors if "pretrain" in name}, errors
    ran = {"extract", "probe", "label", "train", "summarize"} & {p.name for p in (repo / "data").iterdir()}
    assert not ran  # the first pipeline's stages after prepare and models@teacher did not run


def test_second_repro_is_a_no_op(repo):
    assert stages_run(dvc("repro", "pretrain_summary", cwd=repo)) == set()


def test_gamma_change_reruns_only_the_hld_arms_and_the_summary(repo):
    output = dvc("exp", "run", "pretrain_summary", "-S", "pretrain.hld.gamma=0.05", cwd=repo)
    assert stages_run(output) == {
        "pretrain@hldc",
        "pretrain@hldf",
        "pretrain_eval@hldc",
        "pretrain_eval@hldf",
        "pretrain_summary",
    }
    diff = dvc_json("metrics", "diff", cwd=repo)
    changed = diff.get("data/pretrain/summary/metrics.json", {})
    assert "hldc_val_logppl" in changed and "nll_val_logppl" not in changed, diff
