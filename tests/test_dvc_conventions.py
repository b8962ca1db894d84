"""DVC as a DVC user expects it, on the tiny configuration through `dvc repro`: each pipeline's summary is its one
metrics file; a fresh clone of the committed run (dvc.lock and the summary committed) has a baseline, so
`dvc exp run -S probe.layer=...` then `dvc metrics diff` prints a real before/after and `dvc exp show --drop data/
--only-changed` fits a 200-column terminal; `dvc plots show` draws the four top-level plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipeline_repo import dvc, dvc_json, make_tiny_repo, run, stages_run

pytestmark = pytest.mark.slow
ARMS = ("gold", "logit_kd", "cloze_kd", "probe_kd", "hld", "oracle")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The tiny pipeline, run and committed as the README says: dvc.lock, the summary, the fingerprints."""
    repo = make_tiny_repo(tmp_path_factory.mktemp("conventions"))
    dvc("repro", cwd=repo)
    run(["git", "add", "dvc.lock", "data/summary", "data/fingerprints", "data/pretrain/summary"], repo)
    run(["git", "add", *(str(p.relative_to(repo)) for p in repo.rglob(".gitignore") if ".dvc" not in p.parts)], repo)
    run(["git", "commit", "-qm", "the run"], repo)
    return repo


@pytest.fixture(scope="module")
def clone(repo: Path, tmp_path_factory) -> tuple[Path, str]:
    """A fresh clone of the committed run, its DVC cache shared (as `dvc pull` from a remote would fill it), with
    `dvc exp run -S probe.layer=<a layer auto did not pick>` done in it; and that command's output."""
    clone = tmp_path_factory.mktemp("clone") / "repo"
    run(["git", "clone", "-q", str(repo), str(clone)], repo)
    dvc("cache", "dir", "--local", str(repo / ".dvc" / "cache"), cwd=clone)
    dvc("checkout", cwd=clone)
    best = json.loads((clone / "data/probe/metrics.json").read_text())["best_layer"]
    other = 1 if best != 1 else 2
    return clone, dvc("exp", "run", "-S", f"probe.layer={other}", cwd=clone)


def test_the_committed_run_leaves_a_clean_worktree(repo):
    status = run(["git", "status", "--porcelain"], repo)
    assert status.strip() == "", status  # everything else is a cached output, ignored by DVC's .gitignore files


def test_each_pipeline_has_one_metrics_file_and_the_headline_is_a_subset_of_the_details(repo):
    shown = dvc_json("metrics", "show", cwd=repo)
    [files] = [value["data"] for value in shown.values()]
    assert set(files) == {"data/summary/metrics.json", "data/pretrain/summary/metrics.json"}
    headline = files["data/summary/metrics.json"]["data"]
    details = json.loads((repo / "data/summary/details.json").read_text())
    assert headline == {key: details[key] for key in headline}
    per_arm = {f"{arm}_{key}" for arm in ARMS for key in ("test_acc", "test_acc_ci_low", "test_acc_ci_high")}
    expected = per_arm | {"teacher_letter_test_acc", "teacher_cloze_test_acc", "teacher_cloze_norm_test_acc",
                          "probe_test_acc", "probe_test_acc_ci_low", "probe_test_acc_ci_high", "probe_layer",
                          "diff_probe_kd_minus_logit_kd", "diff_probe_kd_minus_cloze_kd", "diff_probe_kd_minus_gold",
                          "diff_probe_minus_best_teacher", "labels_probe_acc", "labels_teacher_acc"}  # fmt: skip
    pgr = {f"{arm}_pgr" for arm in ARMS}  # only where the oracle beats gold, which a few tiny steps may not do
    assert expected <= set(headline) <= expected | pgr, set(headline) ^ expected


def test_a_fresh_clone_has_a_baseline_for_metrics_diff(clone):
    repo, output = clone
    ran = stages_run(output)
    assert ran == {"label", "train@probe_kd", "summarize"}, output
    diff = dvc_json("metrics", "diff", cwd=repo)
    changed = diff["data/summary/metrics.json"]
    assert "probe_layer" in changed, diff
    assert all(entry["old"] is not None and entry["new"] is not None for entry in changed.values()), diff
    printed = dvc("metrics", "diff", cwd=repo)
    assert "probe_layer" in printed and "HEAD" in printed and "workspace" in printed, printed


def test_exp_show_only_changed_fits_200_columns(clone):
    """The params and point estimates that changed fit; DVC also shows a hash column per changed dependency (the
    label files, ...), 32 characters each, which no dvc.yaml setting hides: the README's command drops them, and
    the intervals' bounds (`dvc metrics show` has them)."""
    repo, _ = clone
    table = dvc("exp", "show", "--only-changed", "--drop", "data/|_ci_", "--md", cwd=repo)
    widths = [len(line) for line in table.splitlines() if line.startswith("|")]
    assert widths and max(widths) <= 200, table
    assert "probe.layer" in table and "probe_layer" in table


def test_plots_show_draws_the_four_top_level_plots(repo, tmp_path):
    dvc("plots", "show", "-o", str(tmp_path / "plots"), cwd=repo)
    page = (tmp_path / "plots" / "index.html").read_text()
    for title in ("Probe accuracy by teacher layer", "validation accuracy during training, one line per arm",
                  "Test accuracy of every arm and teacher readout", "Soft-label accuracy on transfer"):  # fmt: skip
        assert title in page, title
    for arm in ARMS:  # one line per arm on the one chart (DVC drops the files' common prefix data/students/)
        assert f'"filename": "{arm}/live/plots/metrics/val/acc.tsv"' in page, arm
        assert f'"model": "{arm}"' in page, arm  # a bar per arm
    assert "teacher_cloze_acc" in page  # the second reference line of the probe plot
