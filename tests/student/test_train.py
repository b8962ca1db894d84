"""The student trainer end to end on a tiny project: every arm, reload, determinism, clear input errors."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from stages.core.config import build
from stages.core.errors import InputError
from stages.core.predictions import read_predictions
from stages.modeling.letters import letter_token_ids
from stages.modeling.loading import resolve
from stages.probing.label_files import label_table, write_labels
from stages.sources.schema import read_split, write_split
from stages.student.config import TrainConfig, TrainPaths, read_train_setup
from stages.student.data import StepRows, step_rows
from tests.tiny_models import make_tiny_causal_lm, make_tokenizer

TEACHER_VOCAB, STUDENT_VOCAB = 300, 280  # the student reads prompts in its own, different tokenizer
D_TEACHER, N_TEACHER_LAYERS = 48, 5
SIZES = {"labeled": 12, "transfer": 16, "val": 10, "test": 10}
READOUTS = {"letter", "cloze", "cloze_norm"}
ARMS = ("gold", "logit_kd", "cloze_kd", "probe_kd", "hld", "oracle")
ROOT = Path(__file__).resolve().parents[2]
PARAMS = {
    "seed": 0,
    "prompt": {
        "template": "{question}\n{options}\nAnswer:",
        "option_format": "{letter}. {text}",
        "cloze_template": "{question}\nAnswer:",
        "on_too_long": "error",
        "chat_template": False,
        "shots": 0,
    },
    "train": {
        "steps": 4,
        "batch_size": 6,
        "transfer_fraction": 0.5,
        "lr": 5e-3,
        "weight_decay": 0.0,
        "warmup_fraction": 0.05,
        "max_grad_norm": 1.0,
        "eval_every": 2,
        "mixed_precision": "auto",
        "lora": False,
        "lora_rank": 8,
    },
    "distill": {
        "arms": {
            "gold": {"soft_labels": None, "hld": False, "gold_transfer": False},
            "logit_kd": {"soft_labels": "teacher", "hld": False, "gold_transfer": False},
            "cloze_kd": {"soft_labels": "cloze", "hld": False, "gold_transfer": False},
            "probe_kd": {"soft_labels": "probe", "hld": False, "gold_transfer": False},
            "hld": {"soft_labels": None, "hld": True, "gold_transfer": False},
            "oracle": {"soft_labels": None, "hld": False, "gold_transfer": True},
            "probe_kd_hld": {"soft_labels": "probe", "hld": True, "gold_transfer": False},
        },
        "kd": {"alpha": 0.5, "temperature": 2.0},
        "hld": {
            "gamma": 0.1,
            "teacher_layer": "middle",
            "student_layer": "middle",
            "mode": "joint",
            "hint_fraction": 0.05,
        },
    },
}


def make_student(folder: Path) -> Path:
    """A student whose tokenizer differs from the teacher's (another vocabulary size)."""
    return make_tiny_causal_lm(folder, d_model=32, n_layers=2, seed=1, vocab_size=STUDENT_VOCAB)


def write_store(path: Path, ids: list[str], rng: np.random.Generator) -> None:
    """A complete hidden-state store per the layout in stages/store/reader.py (no option logits)."""
    group = zarr.open_group(str(path), mode="w")
    hidden = group.create_array("hidden", shape=(len(ids), N_TEACHER_LAYERS, D_TEACHER), dtype="float16")
    hidden[:] = rng.normal(size=(len(ids), N_TEACHER_LAYERS, D_TEACHER)).astype(np.float16)
    group.attrs.update(
        {"example_ids": ids, "layers": list(range(N_TEACHER_LAYERS)), "n_teacher_layers": N_TEACHER_LAYERS}
    )
    group.attrs["complete"] = True


def write_label_file(path: Path, root: Path, rng: np.random.Generator, kind: str, available: bool = True) -> None:
    tables = []
    for name in ("labeled", "transfer") if available else ():
        split = read_split(root / f"data/prepared/{name}.parquet")
        logits = rng.normal(size=(split.n_examples, 26))
        probs = np.where(split.valid_mask(), np.exp(logits), 0.0)
        probs = probs / probs.sum(-1, keepdims=True)
        tables.append(label_table(split.ids, name, probs, split.n_choices, layer=2 if kind == "probe" else None))
    missing = {} if available else {"missing": "teacher tiny has no LM head (encoder-only)"}
    write_labels(tables, path, {"kind": kind, "available": available, "teacher": {"model": "tiny"}, **missing})


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    rng = np.random.default_rng(0)
    words = ["apple", "stone", "river", "cloud", "pear", "sand", "lake", "rain"]
    (root / "data/prepared").mkdir(parents=True)
    for name, n_examples in SIZES.items():
        rows = []
        for i in range(n_examples):
            n_choices = 3 + i % 2  # mixed choice counts exercise the masking of invalid slots
            choices = [words[(i + k) % len(words)] for k in range(n_choices)]
            rows.append({"id": f"{name}-{i}", "question": f"Which is {choices[i % n_choices]}?", "choices": choices,
                         "answer": i % n_choices})  # fmt: skip
        write_split(rows, root / f"data/prepared/{name}.parquet")
    model_dir = root / "data/models/student"
    model_dir.mkdir(parents=True)
    resolve(str(make_student(root / "student_weights")), revision=None, trust_remote_code=False).save(model_dir)
    (root / "data/labels").mkdir(parents=True)
    for kind in ("teacher", "cloze", "probe"):
        write_label_file(root / f"data/labels/{kind}.parquet", root, rng, kind)
    (root / "data/hidden").mkdir(parents=True)
    for name in ("labeled", "transfer"):
        write_store(root / f"data/hidden/{name}.zarr", read_split(root / f"data/prepared/{name}.parquet").ids, rng)
    return root


def project_paths(root: Path, arm: str) -> TrainPaths:
    """The arm's TrainPaths into the tiny project under `root` (laid out as dvc.yaml lays out data/)."""
    terms = PARAMS["distill"]["arms"][arm]
    soft_labels = root / f"data/labels/{terms['soft_labels']}.parquet" if terms["soft_labels"] else None
    hidden = tuple(root / f"data/hidden/{name}.zarr" for name in ("labeled", "transfer")) if terms["hld"] else ()
    return TrainPaths(
        prepared=root / "data/prepared",
        student=root / "data/models/student",
        out=root / "data/students" / arm,
        soft_labels=soft_labels,
        hidden=hidden,
    )


def train(arm: str, root: Path, params: dict = PARAMS, paths: TrainPaths | None = None) -> dict[str, float]:
    from stages.student.run import run_arm

    return run_arm(read_train_setup(arm, params), paths or project_paths(root, arm))


@pytest.fixture(scope="module")
def trained(project: Path) -> dict[str, dict[str, float]]:
    return {arm: train(arm, project) for arm in (*ARMS, "probe_kd_hld")}


def test_student_tokenizer_differs_from_the_teachers_and_has_letter_tokens(project: Path):
    from transformers import AutoTokenizer

    student = AutoTokenizer.from_pretrained(project / "student_weights")
    assert len(student) == STUDENT_VOCAB != len(make_tokenizer(vocab_size=TEACHER_VOCAB))
    ids, _ = letter_token_ids(student, 26, "student")
    assert len(set(ids)) == 26
    assert [student.decode([i]).strip() for i in ids[:4]] == ["A", "B", "C", "D"]


def test_every_arm_writes_its_folder_and_metrics(project: Path, trained: dict):
    for arm in (*ARMS, "probe_kd_hld"):
        folder = project / "data/students" / arm
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics == pytest.approx(trained[arm])
        assert 0 <= metrics["test_acc"] <= 1 and metrics["test_nll"] > 0
        assert (folder / "model/config.json").exists() and (folder / "model/tokenizer.json").exists()
        assert (folder / "live/plots/metrics/val/acc.tsv").read_text().startswith("step\tacc\n")  # no timestamps
        assert (folder / "calibration.csv").read_text().startswith("confidence,accuracy,n_examples")
        assert len((folder / "confusion.csv").read_text().splitlines()) == SIZES["test"] + 1
        assert not list((project / "data/students").glob(".tmp-*"))
        ids, answers, correct = read_predictions(folder / "test_predictions.parquet")
        assert ids == read_split(project / "data/prepared/test.parquet").ids and set(correct) == READOUTS
        assert metrics["test_acc"] == pytest.approx(correct["letter"].mean())
        assert metrics["test_cloze_acc"] == pytest.approx(correct["cloze"].mean())
        assert metrics["test_cloze_norm_acc"] == pytest.approx(correct["cloze_norm"].mean())
    terms = {arm: sorted(p.stem for p in (project / f"data/students/{arm}/live/plots/metrics/train").glob("*.tsv"))
             for arm in trained}  # fmt: skip
    assert terms["gold"] == terms["oracle"] == ["ce", "loss"]
    assert terms["logit_kd"] == terms["cloze_kd"] == terms["probe_kd"] == ["ce", "kd", "loss"]
    assert terms["hld"] == ["ce", "hld", "loss"]
    assert terms["probe_kd_hld"] == ["ce", "hld", "kd", "loss"]
    # Different targets on the same batches: the learned students differ.
    nll = [trained[arm]["test_nll"] for arm in ARMS]
    assert len(set(nll)) == len(ARMS)


def test_only_the_oracle_trains_on_transfer_gold(project: Path):
    """CE reads transfer's gold answers in the oracle arm alone; every other arm sees labeled gold only."""
    from stages.modeling.loading import load_model
    from stages.student.rows import load_rows

    tokenizer = load_model(project / "data/models/student")[1]
    for arm in ARMS:
        rows = load_rows(read_train_setup(arm, PARAMS), project_paths(project, arm), tokenizer)
        expected = SIZES["labeled"] + (SIZES["transfer"] if arm == "oracle" else 0)
        assert rows.gold_rows.sum() == expected and rows.gold_rows[: SIZES["labeled"]].all(), arm


def test_hld_projection_is_saved_beside_the_student(project: Path, trained: dict):
    from safetensors.torch import load_file

    weight = load_file(str(project / "data/students/hld/model/hld_projection.safetensors"))["weight"]
    assert tuple(weight.shape) == (D_TEACHER, 32)
    assert not (project / "data/students/gold/model/hld_projection.safetensors").exists()


def reloaded_metrics(folder: Path, project: Path) -> dict[str, float]:
    """Val/test metrics of a saved student loaded back with from_pretrained alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stages.sources.prompts import PromptConfig
    from stages.student.data import encode_split
    from stages.student.evaluation import final_metrics
    from stages.student.model import LetterReadout

    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    prompt = build(PromptConfig, PARAMS["prompt"], "prompt")
    evaluation = {
        n: encode_split(read_split(project / f"data/prepared/{n}.parquet"), tokenizer, prompt, cloze=n == "test")
        for n in ("val", "test")
    }
    letters, _ = letter_token_ids(tokenizer, 26, "student")
    return final_metrics(model, evaluation, LetterReadout(tokenizer, torch.tensor(letters)), batch_size=4)[0]


def test_saved_student_reloads_and_reproduces_its_test_accuracy(project: Path, trained: dict):
    metrics = reloaded_metrics(project / "data/students/probe_kd/model", project)
    assert metrics["test_acc"] == trained["probe_kd"]["test_acc"]
    assert metrics["test_nll"] == pytest.approx(trained["probe_kd"]["test_nll"], abs=1e-5)
    assert metrics["test_cloze_acc"] == trained["probe_kd"]["test_cloze_acc"]


def test_student_cloze_picks_match_a_plain_forward_per_option(project: Path, trained: dict):
    """The student is scored by the teacher's cloze code: its picks are the argmax of plain per-option forwards."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.modeling.test_cloze import plain_log_likelihood

    folder = project / "data/students/cloze_kd"
    model = AutoModelForCausalLM.from_pretrained(folder / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    test = read_split(project / "data/prepared/test.parquet")
    picks = [
        int(np.argmax([plain_log_likelihood(model, tokenizer, question, option) for option in choices]))
        for question, choices in zip(test.questions, test.choices, strict=True)
    ]
    table = pq.read_table(folder / "test_predictions.parquet")
    assert table.column("cloze").to_pylist() == picks


def test_lora_student_is_merged_on_save_and_reloads_plainly(project: Path, trained: dict, tmp_path: Path):
    pytest.importorskip("peft")
    from safetensors import safe_open

    shutil.copytree(project / "data", tmp_path / "data")
    params = json.loads(json.dumps(PARAMS))
    params["train"].update(lora=True, lora_rank=4)
    metrics = train("probe_kd", tmp_path, params)
    folder = tmp_path / "data/students/probe_kd/model"
    with safe_open(str(folder / "model.safetensors"), "pt") as weights:
        names = list(weights.keys())
    assert names and not any("lora" in name for name in names)  # adapters merged: a plain checkpoint
    assert metrics["test_nll"] != trained["probe_kd"]["test_nll"]  # adapters trained, not full fine-tuning
    reloaded = reloaded_metrics(folder, tmp_path)
    assert reloaded["test_acc"] == metrics["test_acc"]
    assert reloaded["test_nll"] == pytest.approx(metrics["test_nll"], abs=1e-5)


def test_same_params_twice_gives_identical_metrics(project: Path, trained: dict):
    assert train("gold", project) == trained["gold"]


def test_sequential_hld_runs_hint_phase_first(project: Path):
    params = json.loads(json.dumps(PARAMS))
    params["distill"]["hld"].update(mode="sequential", hint_fraction=0.5)
    metrics = train("hld", project, params)
    curve = (project / "data/students/hld/live/plots/metrics/train/ce.tsv").read_text().splitlines()
    assert len(curve) == 1 + 2  # ce logged only after the 2 hint steps
    assert 0 <= metrics["test_acc"] <= 1


def test_batch_stream_is_shared_seeded_and_cycles():
    first = [next(s) for s in [step_rows(5, 7, 3, 2, seed=0)] for _ in range(4)]
    again = step_rows(5, 7, 3, 2, seed=0)
    assert [next(again) for _ in range(4)] == first
    labeled = [i for rows in first for i in rows.labeled]
    assert sorted(labeled[:5]) == list(range(5))  # each pass is a permutation of the rows
    assert all(isinstance(rows, StepRows) and len(rows.transfer) == 2 for rows in first)
    assert [next(step_rows(5, 7, 3, 2, seed=1)) for _ in range(1)][0] != first[0]


def test_logit_kd_with_unavailable_teacher_labels_is_recorded_not_fatal(project: Path, tmp_path: Path):
    root = tmp_path / "encoder_teacher"
    shutil.copytree(project / "data/prepared", root / "data/prepared")
    shutil.copytree(project / "data/models", root / "data/models")
    (root / "data/labels").mkdir(parents=True)
    write_label_file(root / "data/labels/teacher.parquet", root, np.random.default_rng(0), "teacher", available=False)
    metrics = train("logit_kd", root)
    folder = root / "data/students/logit_kd"
    assert metrics == json.loads((folder / "metrics.json").read_text())
    assert metrics["available"] is False
    assert re.search(r"no teacher labels: teacher tiny has no LM head \(encoder-only\)", metrics["why"])
    ids, _, correct = read_predictions(folder / "test_predictions.parquet")
    assert ids == read_split(root / "data/prepared/test.parquet").ids and correct == {}  # null readouts
    assert "did not train" in (folder / "model/UNAVAILABLE.txt").read_text()
    for plot in ("calibration.csv", "confusion.csv", "live/plots/metrics/val/acc.tsv"):
        assert len((folder / plot).read_text().splitlines()) == 1, plot  # header only


def test_missing_arm_and_bad_config_name_what_to_change():
    with pytest.raises(InputError, match="distill.arms.nope is not defined"):
        read_train_setup("nope", PARAMS)
    with pytest.raises(InputError, match="train.transfer_fraction=1.5"):
        TrainConfig(transfer_fraction=1.5)
    params = json.loads(json.dumps(PARAMS))
    params["distill"]["hld"]["mode"] = "later"
    with pytest.raises(InputError, match="distill.hld.mode='later'"):
        read_train_setup("hld", params)


def test_hld_teacher_layer_out_of_range_is_an_input_error(project: Path, tmp_path: Path):
    params = json.loads(json.dumps(PARAMS))
    params["distill"]["hld"]["teacher_layer"] = 9
    with pytest.raises(InputError, match="distill.hld.teacher_layer=9 but the teacher has layers 0..4"):
        train("hld", project, params)


def test_an_input_the_arm_needs_but_paths_lack_is_an_input_error(project: Path, tmp_path: Path):
    from dataclasses import replace

    paths = replace(project_paths(project, "probe_kd"), out=tmp_path / "probe_kd", soft_labels=None)
    with pytest.raises(InputError, match="distill.arms.probe_kd.soft_labels=probe needs the probe label file"):
        train("probe_kd", project, paths=paths)
    paths = replace(project_paths(project, "hld"), out=tmp_path / "hld", hidden=())
    with pytest.raises(InputError, match="HLD arms need the teacher's hidden-state stores of labeled and transfer"):
        train("hld", project, paths=paths)
    swapped = (project / "data/hidden/transfer.zarr", project / "data/hidden/labeled.zarr")
    paths = replace(project_paths(project, "hld"), out=tmp_path / "hld", hidden=swapped)
    with pytest.raises(InputError, match="transfer.zarr: example ids differ from .*labeled.parquet; rerun extract"):
        train("hld", project, paths=paths)
    assert not list(tmp_path.iterdir())  # nothing written


def cli_paths(arm: str) -> list[str]:
    """The train command's path options for `arm`, as dvc.yaml writes them (relative to the project folder)."""
    paths = project_paths(Path("."), arm)
    options = ["--prepared", str(paths.prepared), "--student", str(paths.student), "--out", str(paths.out)]
    if paths.soft_labels is not None:
        options += ["--soft-labels", str(paths.soft_labels)]
    for store in paths.hidden:
        options += ["--hidden", str(store)]
    return options


def test_cli_records_an_unavailable_arm_with_exit_0(project: Path, tmp_path: Path, monkeypatch):
    import typer
    import yaml
    from typer.testing import CliRunner

    from stages.train import main

    shutil.copytree(project / "data/prepared", tmp_path / "data/prepared")
    shutil.copytree(project / "data/models", tmp_path / "data/models")
    (tmp_path / "data/labels").mkdir(parents=True)
    write_label_file(tmp_path / "data/labels/teacher.parquet", tmp_path, np.random.default_rng(0), "teacher", False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    monkeypatch.chdir(tmp_path)  # no dvc.yaml here: params come from params.yaml
    app = typer.Typer()
    app.command()(main)
    result = CliRunner().invoke(app, ["logit_kd", *cli_paths("logit_kd")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "data/students/logit_kd/metrics.json").read_text())
    assert metrics["available"] is False and "teacher.parquet: no teacher labels" in metrics["why"]


def test_lora_without_peft_is_a_clear_error(project: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft raises ImportError, installed or not
    params = json.loads(json.dumps(PARAMS))
    params["train"]["lora"] = True
    with pytest.raises(InputError, match="train.lora=true needs peft"):
        train("gold", project, params)


def test_term_scales_make_the_mean_over_shards_the_global_mean():
    from stages.student.loop import term_scales

    is_labeled = np.array([True, True, True, False, False, False])
    batch = [0, 1, 2, 3, 4, 5]  # 3 labeled then 3 transfer rows, split over 2 processes as batch[rank::2]
    first, second = term_scales(is_labeled, batch, batch[0::2], 2), term_scales(is_labeled, batch, batch[1::2], 2)
    assert first == pytest.approx({"ce": 4 / 3, "kd": 1.0, "hld": 1.0})  # 2 of the 3 labeled rows
    assert second == pytest.approx({"ce": 2 / 3, "kd": 1.0, "hld": 1.0})
    assert term_scales(is_labeled, batch, batch, 1) == {"ce": 1.0, "kd": 1.0, "hld": 1.0}
    # mean over shards of (scale x shard mean) == global mean, for any per-row values
    ce = np.array([0.5, 1.5, 4.0])
    shard_means = [ce[[0, 2]].mean() * first["ce"], ce[[1]].mean() * second["ce"]]
    assert np.mean(shard_means) == pytest.approx(ce.mean())


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(project: Path, trained: dict, tmp_path: Path):
    """`PROBEKD_LAUNCHER=torchrun --nproc_per_node 2` (gloo on CPU): one arm folder, same metrics as one process.

    The global batch (train.batch_size) is the same, each process trains on its share and DDP averages the
    gradients, so the run equals the single-process one up to float summation order (sharded forward passes
    padded to each shard's longest prompt, gradient all-reduce): metrics are compared to a 1e-5 tolerance.
    """
    import os
    import subprocess
    import sys

    import yaml
    from transformers import AutoModelForCausalLM

    for name in ("prepared", "models", "labels", "hidden"):
        shutil.copytree(project / "data" / name, tmp_path / "data" / name)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))  # no dvc.yaml here: params come from params.yaml
    launcher = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node 2"
    # PYTHONPATH: this checkout's stages/, not whichever one the environment has installed.
    env = {**os.environ, "PROBEKD_LAUNCHER": launcher, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    result = subprocess.run(
        [sys.executable, "-m", "stages", "train", "probe_kd_hld", *cli_paths("probe_kd_hld")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch.distributed.run --standalone --nproc_per_node 2 -m stages train probe_kd_hld" in result.stderr
    assert result.stderr.count("stages.train INFO probe_kd_hld: {") == 2  # both ranks ran and return the metrics
    assert sorted(p.name for p in (tmp_path / "data/students").iterdir()) == ["probe_kd_hld"]
    folder = tmp_path / "data/students/probe_kd_hld"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert sorted(metrics) == sorted(trained["probe_kd_hld"])
    assert metrics == pytest.approx(trained["probe_kd_hld"], rel=1e-5)
    for curve in ("train/loss", "train/ce", "train/kd", "train/hld", "val/nll"):
        two = (folder / f"live/plots/metrics/{curve}.tsv").read_text().split()
        one = (project / f"data/students/probe_kd_hld/live/plots/metrics/{curve}.tsv").read_text().split()
        assert len(two) == len(one) > 2 and [float(v) for v in two[2:]] == pytest.approx(
            [float(v) for v in one[2:]], rel=1e-5
        )
    model = AutoModelForCausalLM.from_pretrained(folder / "model")
    assert model.config.hidden_size == 32
    assert (folder / "model/hld_projection.safetensors").exists()
