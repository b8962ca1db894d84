"""pretrain@<arm> on a tiny teacher and corpus: every arm trains and writes its folder; the FLOP budget gives NLL
more steps; the online teacher trains like the cached signal; pretrain_eval and pretrain_summary read the arms."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stages.core.errors import InputError
from stages.pretraining.config import (
    ArmSetup,
    PretrainEvalConfig,
    PretrainHLDConfig,
    PretrainKDConfig,
    PretrainTrainConfig,
    SignalConfig,
    StudentConfig,
)
from stages.pretraining.corpus import read_corpus
from stages.pretraining.losses import step_flops
from stages.pretraining.run import run_arm
from stages.pretraining.signal_store import run as cache_signal
from stages.pretraining.summary import summarize
from stages.pretraining.trainer import arm_steps, batch_order
from stages.sources.prompts import PromptConfig
from stages.sources.schema import write_split

TRAIN = PretrainTrainConfig(steps=6, batch_size=4, lr=1e-2, eval_every=3, mixed_precision="no")


def setup_for(arm: str, **train) -> ArmSetup:
    kd = PretrainKDConfig(alpha=0.5, temperature=2.0) if arm != "nll" else None
    hld = PretrainHLDConfig(gamma=0.1, hint_fraction=0.34) if arm in ("hldc", "hldf") else None
    config = PretrainTrainConfig(**{**TRAIN.__dict__, **train})
    return ArmSetup(arm, 0, StudentConfig(d_model=16, n_layers=2, n_heads=2), config, kd, hld)


@pytest.fixture(scope="module")
def signal(teacher_dir, corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("signal") / "signal.zarr"
    cache_signal(SignalConfig(top_k=5, dtype="float32", batch_size=4, device="cpu"), read_corpus(corpus_dir)[0],
                 teacher_dir, out)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def arms(teacher_dir, corpus_dir, signal, tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("arms")
    return {arm: (root / arm, run_arm(setup_for(arm), corpus_dir, signal, teacher_dir, root / arm))
            for arm in ("nll", "kd", "hldc", "hldf")}  # fmt: skip


def test_every_arm_writes_its_folder_and_curves(arms):
    for arm, (folder, summary) in arms.items():
        assert (folder / "model" / "model.safetensors").exists() and (folder / "model" / "training.json").exists()
        assert json.loads((folder / "training.json").read_text()) == summary
        curve = json.loads((folder / "live/plots/custom/val_logppl.json").read_text())
        assert [point["step"] for point in curve] == [3, 6]
        assert curve[-1]["tokens"] == 6 * 4 * 16 == summary["train_tokens"]
        teacher = 0 if arm == "nll" else summary["teacher_params"]
        per_step = step_flops(summary["student_params"] + summary["projection_params"], teacher, 64, arm != "nll")
        assert summary["train_flops"] == pytest.approx(6 * per_step)
        assert np.isfinite(summary["val_logppl"]) and summary["val_logppl"] < np.log(400)
        assert (summary["projection_params"] > 0) == (arm in ("hldc", "hldf"))
        assert (folder / "live/plots/metrics/train/flops.tsv").exists()
    assert (arms["hldc"][0] / "live/plots/metrics/train/hld.tsv").exists()
    assert not (arms["kd"][0] / "live/plots/metrics/train/hld.tsv").exists()
    assert arms["nll"][1]["val_logppl"] != arms["kd"][1]["val_logppl"]


def test_flop_budget_buys_nll_more_steps():
    flops = setup_for("nll", budget="flops")
    assert arm_steps(flops, 1000, 0, 3000, 64) == 12  # 6 steps x (6 x 1000 + 2 x 3000) / (6 x 1000)
    assert arm_steps(setup_for("kd", budget="flops"), 1000, 0, 3000, 64) == 6
    assert arm_steps(setup_for("hldc", budget="flops"), 1000, 100, 3000, 64) == 5  # the projection costs too
    assert arm_steps(setup_for("nll"), 1000, 0, 3000, 64) == 6  # budget: tokens


def test_batch_order_is_the_same_for_every_arm_and_covers_each_epoch():
    first = [next(order) for order in [batch_order(10, 4, 3)] for _ in range(5)]
    again = batch_order(10, 4, 3)
    assert all(np.array_equal(batch, next(again)) for batch in first)
    assert sorted(np.concatenate(first)[:10].tolist()) == list(range(10))


def test_online_teacher_trains_like_the_cached_signal(teacher_dir, corpus_dir, signal, arms, tmp_path):
    online = tmp_path / "online.zarr"
    cache_signal(SignalConfig(top_k=5, online=True, device="cpu"), read_corpus(corpus_dir)[0], teacher_dir, online)
    summary = run_arm(setup_for("hldc"), corpus_dir, online, teacher_dir, tmp_path / "hldc")
    assert summary["online"] is True
    assert summary["train_flops"] == arms["hldc"][1]["train_flops"]
    assert summary["val_logppl"] == pytest.approx(arms["hldc"][1]["val_logppl"], abs=1e-3)


def test_evaluation_and_summary(arms, corpus_dir, tmp_path):
    from stages.pretraining.evaluation import evaluate_arm

    rows = [{"id": f"q{i}", "question": f"Which is the fox {i}?", "choices": ["fox", "dog", "sky"], "answer": i % 3}
            for i in range(9)]  # fmt: skip
    write_split(rows, tmp_path / "test.parquet")
    paths = []
    for arm, (folder, summary) in arms.items():
        config = PretrainEvalConfig(batch_size=4, position_buckets=3)
        result = evaluate_arm(arm, folder, corpus_dir, tmp_path / "test.parquet", PromptConfig(), config,
                              tmp_path / f"{arm}.json")  # fmt: skip
        assert result["val_logppl"] == pytest.approx(summary["val_logppl"], rel=1e-4)
        buckets = [result[f"val_logppl_bucket{i}"] for i in range(3)]
        assert min(buckets) <= result["val_logppl"] <= max(buckets) and len(result["downstream_correct"]) == 9
        paths.append(tmp_path / f"{arm}.json")
    metrics = summarize(paths, tmp_path / "summary.json")
    for arm in arms:
        assert {f"{arm}_val_logppl", f"{arm}_downstream_acc", f"{arm}_train_flops"} <= set(metrics)
        assert metrics[f"{arm}_downstream_acc_ci_low"] <= metrics[f"{arm}_downstream_acc"]
    assert metrics["kd_minus_nll_val_logppl"] == pytest.approx(metrics["kd_val_logppl"] - metrics["nll_val_logppl"])
    with pytest.raises(InputError, match="arm evaluation not found"):
        summarize([tmp_path / "missing.json"], tmp_path / "summary.json")
