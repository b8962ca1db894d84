"""A battery of malformed params.yaml edits: each stops the stage that reads it with ONE clear line, exit 2.

Each case copies the repo's params.yaml into a fresh folder (no dvc.yaml there: the file is read directly), applies
one edit, and runs the stage that reads the edited section in-process (`python -m stages <stage>`), with its
required paths pointing into that folder. The config is read before any input is opened, so the inputs need
not exist; no case may get past config reading (a stage that did would fail on the missing inputs instead).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from stages.__main__ import build_app

ROOT = Path(__file__).resolve().parents[1]
DVC_STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


# ------------------------------------------------------------------ edits of the loaded params.yaml


def node(params: dict, path: str) -> tuple[dict, str]:
    *parents, key = path.split(".")
    for part in parents:
        params = params[part]
    return params, key


def set_(path: str, value: Any) -> Callable[[dict], None]:
    def edit(params: dict) -> None:
        parent, key = node(params, path)
        parent[key] = value

    return edit


def delete(path: str) -> Callable[[dict], None]:
    def edit(params: dict) -> None:
        parent, key = node(params, path)
        del parent[key]

    return edit


def rename(path: str, new_key: str) -> Callable[[dict], None]:
    """A typo: the key is spelled `new_key` instead, its value kept."""

    def edit(params: dict) -> None:
        parent, key = node(params, path)
        parent[new_key] = parent.pop(key)

    return edit


# ------------------------------------------------------------------ how each stage is invoked


def command(stage: str, tmp: Path) -> list[str]:
    """argv after `python -m stages`, every required path inside `tmp` (none of them exists)."""
    name, _, instance = stage.partition("@")
    paths = {
        "prepare": ["--raw", tmp / "data/raw", "--out", tmp / "data/prepared"],
        "models": [instance, "--out", tmp / f"data/models/{instance}"],
        "extract": [
            instance,
            "--data", tmp / f"data/prepared/{instance}.parquet",
            "--teacher", tmp / "data/models/teacher",
            "--out", tmp / f"data/hidden/{instance}.zarr",
        ],
        "probe": ["--prepared", tmp / "data/prepared", "--hidden", tmp / "data/hidden", "--out", tmp / "data/probe"],
        "label": [
            "--prepared", tmp / "data/prepared",
            "--hidden", tmp / "data/hidden",
            "--probe", tmp / "data/probe",
            "--out", tmp / "data/labels",
        ],
        "train": [
            instance,
            "--prepared", tmp / "data/prepared",
            "--student", tmp / "data/models/student",
            "--out", tmp / f"data/students/{instance}",
        ],
        "corpus": [
            "--raw", tmp / "data/raw", "--teacher", tmp / "data/models/teacher", "--out", tmp / "data/pretrain/corpus",
        ],
        "teacher_signal": [
            "--corpus", tmp / "data/pretrain/corpus",
            "--teacher", tmp / "data/models/teacher",
            "--out", tmp / "data/pretrain/teacher_signal.zarr",
        ],
        "pretrain": [
            instance,
            "--corpus", tmp / "data/pretrain/corpus",
            "--signal", tmp / "data/pretrain/teacher_signal.zarr",
            "--teacher", tmp / "data/models/teacher",
            "--out", tmp / f"data/pretrain/students/{instance}",
        ],
        "pretrain_eval": [
            instance,
            "--student", tmp / f"data/pretrain/students/{instance}",
            "--corpus", tmp / "data/pretrain/corpus",
            "--test", tmp / "data/prepared/test.parquet",
            "--out", tmp / f"data/pretrain/eval/{instance}.json",
        ],
    }[name]  # fmt: skip
    return [name, *map(str, paths)]


@dataclass(frozen=True)
class Case:
    id: str
    section: str
    """The params.yaml section the edit breaks; the stage must read it (dvc.yaml says which do)."""
    stage: str
    """dvc.yaml stage name: `prepare`, `models@teacher`, `train@gold`, ..."""
    edit: Callable[[dict], None]
    expected: str
    """The message after `error: params.yaml: `, or its start (it names the parameter)."""
    parameter: str
    """The parameter the message must name."""
    known_bug: str = ""
    """Why the library's message misses, for a case that fails today (strict xfail: fixing it shows here)."""
    only_without_cuda: bool = False
    """A device this machine lacks: skipped where torch sees a CUDA device."""


CASES = [
    # seed
    Case("seed-wrong-type", "seed", "prepare", set_("seed", "zero"), "seed='zero' must be an integer", "seed"),
    Case("seed-out-of-range", "seed", "probe", set_("seed", -1), "seed=-1 must be an integer >= 0", "seed"),
    Case("seed-missing", "seed", "train@gold", delete("seed"), "seed is missing (One seed for data splits", "seed"),
    # data
    Case("data-typo", "data", "prepare", rename("data.labeled", "labelled"),
         "data.labelled is not a parameter; did you mean data.labeled?", "data.labelled"),
    Case("data-wrong-type", "data", "prepare", set_("data.val", "many"),
         "data.val='many' must be an integer", "data.val"),
    Case("data-out-of-range", "data", "prepare", set_("data.labeled", 0),
         "data.labeled=0 must be >= 1", "data.labeled"),
    Case("data-choice", "data", "prepare", set_("data.on_invalid", "ignore"),
         "data.on_invalid='ignore' must be one of error, skip", "data.on_invalid"),
    Case("data-missing", "data", "prepare", delete("data.test"),
         "data.test is missing (At most this many test examples.)", "data.test"),
    Case("data-allow-untracked-string", "data", "prepare", set_("data.allow_untracked", "yes"),
         "data.allow_untracked='yes' must be true or false", "data.allow_untracked"),
    Case("data-empty-dataset", "data", "prepare", set_("data.dataset", ""), "data.dataset is empty", "data.dataset"),
    Case("data-not-a-mapping", "data", "prepare", set_("data", "builtin"),
         "section `data` is missing or not a mapping", "data"),
    # builtin.seed
    Case("builtin.seed-wrong-type", "builtin.seed", "prepare", set_("builtin.seed", "zero"),
         "builtin.seed='zero' must be an integer", "builtin.seed"),
    Case("builtin.seed-missing", "builtin.seed", "models@teacher", delete("builtin.seed"),
         "builtin.seed is missing (Seed of the builtin world", "builtin.seed"),
    Case("builtin.seed-out-of-range", "builtin.seed", "models@student", set_("builtin.seed", -3),
         "builtin.seed=-3 must be an integer >= 0", "builtin.seed"),
    # builtin.task
    Case("builtin.task-unknown", "builtin.task", "prepare", set_("builtin.task.colour", "red"),
         "builtin.task.colour is not a parameter; builtin.task has: n_categories, ", "builtin.task.colour"),
    Case("builtin.task-out-of-range", "builtin.task", "prepare", set_("builtin.task.n_choices", 3),
         "builtin.task.n_categories=8 must be divisible by builtin.task.n_choices=3", "builtin.task.n_choices"),
    Case("builtin.task-zero", "builtin.task", "models@teacher", set_("builtin.task.n_val", 0),
         "builtin.task.n_val=0 must be a positive integer", "builtin.task.n_val"),
    # builtin.teacher / builtin.student
    Case("builtin.teacher-typo", "builtin.teacher", "models@teacher", rename("builtin.teacher.d_model", "d_modle"),
         "builtin.teacher.d_modle is not a parameter; did you mean builtin.teacher.d_model?",
         "builtin.teacher.d_modle"),
    Case("builtin.teacher-yaml-1.1", "builtin.teacher", "models@teacher", set_("builtin.teacher.lr", "1e-2"),
         "builtin.teacher.lr='1e-2' must be a number (YAML 1.1 reads 1e-3 as text: write 1.0e-3)",
         "builtin.teacher.lr"),
    Case("builtin.student-missing", "builtin.student", "models@student", delete("builtin.student.steps"),
         "builtin.student.steps is missing (Pretraining steps.)", "builtin.student.steps"),
    Case("builtin.teacher-out-of-range", "builtin.teacher", "models@teacher", set_("builtin.teacher.d_model", 90),
         "builtin.teacher.d_model=90 must split into n_heads=4 heads", "builtin.teacher.d_model"),
    Case("builtin.student-fraction", "builtin.student", "models@student", set_("builtin.student.letter_bias", 2),
         "builtin.student.letter_bias=2.0 must be a number in [0, 1]", "builtin.student.letter_bias"),
    # teacher / student
    Case("teacher-typo", "teacher", "models@teacher", rename("teacher.revision", "revison"),
         "teacher.revison is not a parameter; did you mean teacher.revision?", "teacher.revison"),
    Case("teacher-wrong-type", "teacher", "models@teacher", set_("teacher.trust_remote_code", "yes please"),
         "teacher.trust_remote_code='yes please' must be true or false", "teacher.trust_remote_code"),
    Case("teacher-no-such-folder", "teacher", "models@teacher", set_("teacher.model", "./no/such/folder"),
         "teacher.model=./no/such/folder: local folder not found", "teacher.model"),
    Case("student-empty-model", "student", "models@student", set_("student.model", " "),
         "student.model is empty", "student.model"),
    # prompt
    Case("prompt-no-options", "prompt", "extract@labeled", set_("prompt.template", "{question}\nAnswer:"),
         "prompt.template must contain {options}; got '{question}\\nAnswer:'", "prompt.template"),
    Case("prompt-typo", "prompt", "train@gold", rename("prompt.option_format", "option_fmt"),
         "prompt.option_fmt is not a parameter; did you mean prompt.option_format?", "prompt.option_fmt"),
    Case("prompt-stray-brace", "prompt", "extract@labeled", set_("prompt.template", "{question}\n{options}\n{Answer:"),
         "prompt.template='{question}\\n{options}\\n{Answer:': unmatched '{' in format spec; it may use {question} "
         "and {options}", "prompt.template"),
    Case("prompt-unknown-field", "prompt", "train@gold", set_("prompt.option_format", "{letter}. {text} ({source})"),
         "prompt.option_format='{letter}. {text} ({source})': unknown field {source}; it may use {letter} and {text}",
         "prompt.option_format"),
    Case("prompt-on-too-long-choice", "prompt", "extract@test", set_("prompt.on_too_long", "cut"),
         "prompt.on_too_long='cut' must be one of error, skip, truncate", "prompt.on_too_long"),
    Case("prompt-cloze-shows-options", "prompt", "extract@test", set_("prompt.cloze_template", "{question} {options}"),
         "prompt.cloze_template must contain {question} and not {options}", "prompt.cloze_template"),
    # extract
    Case("extract-cloze-wrong-type", "extract", "extract@labeled", set_("extract.cloze", "yes"),
         "extract.cloze='yes' must be true or false", "extract.cloze"),
    Case("extract-wrong-type", "extract", "extract@test", set_("extract.layers", "first"),
         "extract.layers='first' must be all or a non-empty list of integers", "extract.layers"),
    Case("extract-out-of-range", "extract", "extract@val", set_("extract.batch_size", 0),
         "extract.batch_size=0 must be >= 1", "extract.batch_size"),
    Case("extract-choice", "extract", "extract@labeled", set_("extract.dtype", "bfloat16"),
         "extract.dtype='bfloat16' must be one of float16, float32", "extract.dtype"),
    Case("extract-device-absent", "extract", "extract@val", set_("extract.device", "cuda"),
         "extract.device=cuda but ", "extract.device", only_without_cuda=True),
    Case("extract-device-index", "extract", "extract@val", set_("extract.device", "cuda:x"),
         "extract.device='cuda:x' must be auto, cpu, cuda or cuda:N", "extract.device"),
    Case("extract-device", "extract", "extract@transfer", set_("extract.device", "gpu"),
         "extract.device='gpu' must be auto, cpu, cuda or cuda:N", "extract.device"),
    # probe (all but probe.layer: the probe stage)
    Case("probe-yaml-1.1", "probe", "probe", set_("probe.l2", "1e-3"),
         "probe.l2='1e-3' must be a number (YAML 1.1 reads 1e-3 as text: write 1.0e-3)", "probe.l2"),
    Case("probe-l2-text", "probe", "probe", set_("probe.l2", "abc"), "probe.l2='abc' must be a number", "probe.l2"),
    Case("probe-calibrate-string", "probe", "probe", set_("probe.calibrate", "false"),
         "probe.calibrate='false' must be true or false", "probe.calibrate"),
    Case("probe-out-of-range", "probe", "probe", set_("probe.folds", 1),
         "probe.folds=1: cross-fitting needs >= 2", "probe.folds"),
    Case("probe-choice", "probe", "probe", set_("probe.kind", "svm"),
         "probe.kind='svm' must be one of logistic, mlp", "probe.kind"),
    Case("probe-typo", "probe", "probe", rename("probe.folds", "fold"),
         "probe.fold is not a parameter; did you mean probe.folds?", "probe.fold"),
    Case("probe-missing", "probe", "probe", delete("probe.calibrate"),
         "probe.calibrate is missing (Fit one temperature per layer", "probe.calibrate"),
    # probe.layer (the label stage)
    Case("probe.layer-wrong-type", "probe.layer", "label", set_("probe.layer", "best"),
         "probe.layer='best' must be auto or an integer", "probe.layer"),
    Case("probe.layer-bool", "probe.layer", "label", set_("probe.layer", True),
         "probe.layer=True must be auto or an integer", "probe.layer"),
    Case("probe.layer-missing", "probe.layer", "label", delete("probe.layer"),
         "probe.layer is missing (auto (best cross-validated accuracy", "probe.layer"),
    # distill.arms.<arm>
    Case("distill.arms-choice", "distill.arms.logit_kd", "train@logit_kd",
         set_("distill.arms.logit_kd.soft_labels", "logits"),
         "distill.arms.logit_kd.soft_labels='logits' must be one of teacher, cloze, probe or null",
         "distill.arms.logit_kd.soft_labels"),
    Case("distill.arms-typo", "distill.arms.hld", "train@hld", rename("distill.arms.hld.hld", "hdl"),
         "distill.arms.hld.hdl is not a parameter; did you mean distill.arms.hld.hld?", "distill.arms.hld.hdl"),
    Case("distill.arms-wrong-type", "distill.arms.gold", "train@gold", set_("distill.arms.gold.hld", "no"),
         "distill.arms.gold.hld='no' must be true or false", "distill.arms.gold.hld"),
    Case("distill.arms-undefined", "distill.arms.gold", "train@gold", delete("distill.arms.gold"),
         "distill.arms.gold is not defined (defined: ['cloze_kd', 'hld', 'logit_kd', 'oracle', 'probe_kd']); add it",
         "distill.arms.gold"),
    Case("distill.arms-oracle-type", "distill.arms.oracle", "train@oracle",
         set_("distill.arms.oracle.gold_transfer", 1),
         "distill.arms.oracle.gold_transfer=1 must be true or false", "distill.arms.oracle.gold_transfer"),
    Case("distill.arms-missing", "distill.arms.cloze_kd", "train@cloze_kd",
         delete("distill.arms.cloze_kd.gold_transfer"),
         "distill.arms.cloze_kd.gold_transfer is missing (CE on transfer's gold answers too",
         "distill.arms.cloze_kd.gold_transfer"),
    # distill.kd
    Case("distill.kd-out-of-range", "distill.kd", "train@probe_kd", set_("distill.kd.alpha", 1.5),
         "distill.kd.alpha=1.5 must be in [0, 1]", "distill.kd.alpha"),
    Case("distill.kd-wrong-type", "distill.kd", "train@logit_kd", set_("distill.kd.temperature", "hot"),
         "distill.kd.temperature='hot' must be a number", "distill.kd.temperature"),
    Case("distill.kd-unknown", "distill.kd", "train@probe_kd", set_("distill.kd.beta", 0.5),
         "distill.kd.beta is not a parameter; distill.kd has: alpha, temperature", "distill.kd.beta"),
    # distill.hld
    Case("distill.hld-choice", "distill.hld", "train@hld", set_("distill.hld.mode", "parallel"),
         "distill.hld.mode='parallel' must be one of joint, sequential", "distill.hld.mode"),
    Case("distill.hld-out-of-range", "distill.hld", "train@hld", set_("distill.hld.hint_fraction", 1.0),
         "distill.hld.hint_fraction=1.0 must be in [0, 1)", "distill.hld.hint_fraction"),
    Case("distill.hld-layer", "distill.hld", "train@hld", set_("distill.hld.teacher_layer", "top"),
         "distill.hld.teacher_layer='top' must be middle or an integer", "distill.hld.teacher_layer"),
    Case("distill.hld-missing", "distill.hld", "train@hld", delete("distill.hld.gamma"),
         "distill.hld.gamma is missing (Weight of the normalised-MSE hint term", "distill.hld.gamma"),
    # train
    Case("train-typo", "train", "train@gold", rename("train.steps", "stpes"),
         "train.stpes is not a parameter; did you mean train.steps?", "train.stpes"),
    Case("train-wrong-type", "train", "train@gold", set_("train.steps", "300"),
         "train.steps='300' must be an integer", "train.steps"),
    Case("train-bool", "train", "train@probe_kd", set_("train.lora", "no"), "train.lora='no' must be true or false",
         "train.lora"),
    Case("train-out-of-range", "train", "train@gold", set_("train.batch_size", 1),
         "train.batch_size=1 must be >= 2", "train.batch_size"),
    Case("train-lr", "train", "train@hld", set_("train.lr", 0), "train.lr=0.0 must be > 0", "train.lr"),
    Case("train-missing", "train", "train@logit_kd", delete("train.warmup_fraction"),
         "train.warmup_fraction is missing (Linear warm-up", "train.warmup_fraction"),
    Case("train-unknown", "train", "train@gold", set_("train.optimizer", "adam"),
         "train.optimizer is not a parameter; train has: steps, batch_size, ", "train.optimizer"),
    Case("train-choice", "train", "train@gold", set_("train.mixed_precision", "fp8"),
         "train.mixed_precision='fp8' must be one of auto, no, fp16, bf16", "train.mixed_precision"),
    Case("train-section-missing", "train", "train@gold", delete("train"),
         "section `train` is missing or not a mapping", "train"),
    # the pre-training study
    Case("pretrain.seed-out-of-range", "pretrain.seed", "pretrain@nll", set_("pretrain.seed", -1),
         "pretrain.seed=-1 must be >= 0", "pretrain.seed"),
    Case("pretrain.corpus-too-few-tokens", "pretrain.corpus", "corpus", set_("pretrain.corpus.train_tokens", 8),
         "pretrain.corpus.train_tokens=8 must be >= seq_len=64", "pretrain.corpus.train_tokens"),
    Case("pretrain.corpus-no-such-source", "pretrain.corpus", "corpus",
         set_("pretrain.corpus.source", "data/raw/missing.jsonl"),
         "pretrain.corpus.source=data/raw/missing.jsonl: no such file or folder", "pretrain.corpus.source"),
    Case("pretrain.corpus-typo", "pretrain.corpus", "corpus", rename("pretrain.corpus.seq_len", "seqlen"),
         "pretrain.corpus.seqlen is not a parameter; did you mean pretrain.corpus.seq_len?", "pretrain.corpus.seqlen"),
    Case("pretrain.signal-choice", "pretrain.signal", "teacher_signal", set_("pretrain.signal.dtype", "int8"),
         "pretrain.signal.dtype='int8' must be one of float16, float32", "pretrain.signal.dtype"),
    Case("pretrain.signal-layer", "pretrain.signal", "teacher_signal", set_("pretrain.signal.layer", "top"),
         "pretrain.signal.layer='top' must be middle or an integer", "pretrain.signal.layer"),
    Case("pretrain.student-heads", "pretrain.student", "pretrain@kd", set_("pretrain.student.n_heads", 5),
         "pretrain.student.d_model=48 must split into n_heads=5 heads", "pretrain.student.d_model"),
    Case("pretrain.train-budget", "pretrain.train", "pretrain@nll", set_("pretrain.train.budget", "time"),
         "pretrain.train.budget='time' must be one of tokens, flops", "pretrain.train.budget"),
    Case("pretrain.train-missing", "pretrain.train", "pretrain@hldc", delete("pretrain.train.steps"),
         "pretrain.train.steps is missing (Optimiser steps", "pretrain.train.steps"),
    Case("pretrain.kd-out-of-range", "pretrain.kd", "pretrain@kd", set_("pretrain.kd.alpha", 2),
         "pretrain.kd.alpha=2.0 must be in [0, 1]", "pretrain.kd.alpha"),
    Case("pretrain.hld-out-of-range", "pretrain.hld", "pretrain@hldf", set_("pretrain.hld.hint_fraction", 1),
         "pretrain.hld.hint_fraction=1.0 must be in [0, 1)", "pretrain.hld.hint_fraction"),
    Case("pretrain.hld-gamma", "pretrain.hld", "pretrain@hldc", set_("pretrain.hld.gamma", "high"),
         "pretrain.hld.gamma='high' must be a number", "pretrain.hld.gamma"),
    Case("pretrain.eval-zero", "pretrain.eval", "pretrain_eval@kd", set_("pretrain.eval.position_buckets", 0),
         "pretrain.eval.position_buckets=0 must be >= 1", "pretrain.eval.position_buckets"),
]  # fmt: skip
SECTIONS = {
    "seed", "data", "builtin.seed", "builtin.task", "builtin.teacher", "builtin.student", "teacher", "student",
    "prompt", "extract", "probe", "probe.layer", "distill.arms", "distill.kd", "distill.hld", "train",
    "pretrain.seed", "pretrain.corpus", "pretrain.signal", "pretrain.student", "pretrain.train", "pretrain.kd",
    "pretrain.hld", "pretrain.eval",
}  # fmt: skip


def stage_params(stage: str) -> list[str]:
    """The params dvc.yaml lists for `stage` (`name` or `name@instance`), foreach templates resolved."""
    name, _, instance = stage.partition("@")
    entry = DVC_STAGES[name]
    if "foreach" not in entry:
        return entry.get("params", [])
    items = entry["foreach"]
    context = {"key": instance, "item": items[instance]} if isinstance(items, dict) else {"item": instance}
    resolved = []
    for param in entry["do"].get("params", []):
        for variable in ("item", "key"):
            param = param.replace(f"${{{variable}}}", str(context.get(variable)))
        if isinstance(context["item"], dict):
            for field, value in context["item"].items():
                param = param.replace(f"${{item.{field}}}", str(value))
        resolved.append(param)
    return resolved


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class ReachedTraining(RuntimeError):
    """Raised by the trainer's stand-in: the stage got past config reading."""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder holding a copy of the repo's params.yaml and no dvc.yaml; the working folder."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    # The trainer (torch, transformers, accelerate) is imported only after the config is read; a stand-in keeps
    # the battery fast and stops any case that gets that far.
    trainer = types.ModuleType("stages.student.run")

    def run_arm(*args: Any, **kwargs: Any) -> None:
        raise ReachedTraining("train got past config reading")

    trainer.run_arm = run_arm  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stages.student.run", trainer)
    pretrainer = types.ModuleType("stages.pretraining.run")
    pretrainer.run_arm = run_arm  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stages.pretraining.run", pretrainer)
    return tmp_path


@pytest.mark.parametrize(
    "stage", ["extract@labeled", "probe", "label", "train@gold", "train@hld", "pretrain@hldf", "teacher_signal"]
)
def test_the_unedited_params_pass_config_reading(project, stage):
    """Control: with the repo's own params.yaml the stage reads its config and goes on (to a missing input).

    prepare and models are left out: with valid params they need no input and would do the real work."""
    done = CliRunner().invoke(build_app(stage.partition("@")[0]), command(stage, project))
    assert "params.yaml" not in done.output, done.output
    if stage.startswith(("train", "pretrain")):
        assert isinstance(done.exception, ReachedTraining)
    elif stage == "teacher_signal":
        assert done.exit_code == 2
        assert (
            done.stderr
            == f"error: {project / 'data/pretrain/corpus'}: corpus not found (run `dvc repro corpus` first)\n"
        )
    else:
        missing = project / "data/prepared/labeled.parquet"
        assert done.exit_code == 2
        assert done.stderr == f"error: {missing}: split file not found (run `dvc repro prepare` first)\n"


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            id=case.id,
            marks=[
                *([pytest.mark.xfail(strict=True, reason=case.known_bug)] if case.known_bug else []),
                *(
                    [pytest.mark.skipif(cuda_available(), reason="this machine has CUDA")]
                    if case.only_without_cuda
                    else []
                ),
            ],
        )
        for case in CASES
    ],
)
def test_malformed_params_stop_the_stage_with_one_line(project, case):
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    case.edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))

    done = CliRunner().invoke(build_app(case.stage.partition("@")[0]), command(case.stage, project))

    assert done.exit_code == 2, done.output
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    [line] = lines
    assert line.startswith("error: params.yaml: "), line
    assert line.startswith(f"error: params.yaml: {case.expected}"), line
    assert case.parameter in line
    assert "Traceback" not in done.output
    assert isinstance(done.exception, SystemExit) and done.exception.code == 2
    assert not (project / "data").exists()  # nothing written


def test_every_section_is_covered_and_read_by_the_stage_its_cases_run():
    assert {case.section.rsplit(".", 1)[0] if case.section.startswith("distill.arms.") else case.section
            for case in CASES} == SECTIONS  # fmt: skip
    assert len(CASES) >= 18 and len({case.id for case in CASES}) == len(CASES)
    for case in CASES:
        params = stage_params(case.stage)
        assert any(
            case.section == param or param.startswith(f"{case.section}.") or case.section.startswith(f"{param}.")
            for param in params
        ), f"{case.id}: dvc.yaml does not give {case.stage} the section {case.section} (it reads {params})"
