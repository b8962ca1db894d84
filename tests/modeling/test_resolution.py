"""Model resolution (stages/modeling/resolution.py): the setup read from params, hub id vs path, writing the ref."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from stages.core.errors import InputError
from stages.modeling.builtin import BuiltinModelConfig
from stages.modeling.loading import load_model
from stages.modeling.resolution import ModelSetup, ModelSourceConfig, looks_like_path, read_model_setup, run
from stages.sources.builtin_world import TaskConfig
from tests.tiny_models import make_tiny_causal_lm

TASK = {"n_categories": 4, "words_per_category": 4, "n_choices": 4, "n_train": 8, "n_val": 4, "n_test": 4}
TINY = {**dataclasses.asdict(BuiltinModelConfig()), "d_model": 16, "n_layers": 1, "n_heads": 2, "vocab_size": 320}
TINY = {**TINY, "steps": 3, "batch_size": 4}
BUILTIN = {"task": TASK, "teacher": {**TINY, "mc_fraction": 0.5, "letter_fraction": 0.3}, "student": TINY}
SOURCE = {"model": "builtin", "revision": None, "trust_remote_code": False}


def params(role: str = "teacher", **source) -> dict:
    return {"builtin": {"seed": 4, **BUILTIN}, role: {**SOURCE, **source}}


def builtin_setup(role: str, seed: int = 0) -> ModelSetup:
    return ModelSetup(role, ModelSourceConfig(), seed, TaskConfig(**TASK), BuiltinModelConfig(**BUILTIN[role]))


# ------------------------------------------------------------------ hub id or path


@pytest.mark.parametrize("source", ["gpt2", "org/name", "Qwen/Qwen2.5-0.5B"])
def test_hub_ids_are_not_paths(source):
    assert not looks_like_path(source)


@pytest.mark.parametrize("source", ["/abs/model", "./model", "../model", "~/model", "a/b/c", "models\\teacher"])
def test_paths_look_like_paths(source):
    assert looks_like_path(source)


# ------------------------------------------------------------------ the setup read from params


def test_builtin_setup_reads_the_task_and_the_roles_builtin_section():
    setup = read_model_setup("teacher", params())
    assert setup == ModelSetup(
        "teacher", ModelSourceConfig(), 4, TaskConfig(**TASK), BuiltinModelConfig(**BUILTIN["teacher"])
    )
    assert read_model_setup("student", params("student")).builtin == BuiltinModelConfig(**TINY)


def test_the_pipeline_seed_never_reaches_a_model():
    """A seed sweep holds the teacher fixed: models read builtin.seed, and not `seed` at all."""
    assert read_model_setup("teacher", {**params(), "seed": 9}) == read_model_setup("teacher", params())
    assert read_model_setup("teacher", params()).builtin_seed == 4
    with pytest.raises(InputError, match=r"^params\.yaml: builtin\.seed is missing \(Seed of the builtin world"):
        read_model_setup("teacher", {**params(), "builtin": BUILTIN})
    with pytest.raises(InputError, match=r"^params\.yaml: builtin\.seed=-2 must be an integer >= 0$"):
        read_model_setup("teacher", {**params(), "builtin": {**BUILTIN, "seed": -2}})


def test_a_hub_id_needs_no_builtin_sections(tmp_path):
    setup = read_model_setup("student", {"student": {**SOURCE, "model": "org/name", "revision": "v1"}})
    assert setup == ModelSetup("student", ModelSourceConfig("org/name", "v1", False), None, None, None)
    folder = make_tiny_causal_lm(tmp_path / "lm")
    setup = read_model_setup("teacher", {"seed": 1, "teacher": {**SOURCE, "model": str(folder)}})
    assert setup.source.model == str(folder) and setup.task is None and setup.builtin is None


def test_bad_role_and_bad_sections():
    with pytest.raises(InputError, match=r"^role must be one of teacher, student; got 'critic'$"):
        read_model_setup("critic", params())
    with pytest.raises(InputError, match=r"^params\.yaml: section `teacher` is missing or not a mapping$"):
        read_model_setup("teacher", params("student"))
    with pytest.raises(
        InputError, match=r"^params\.yaml: teacher\.revison is not a parameter; did you mean teacher\.revision\?$"
    ):
        read_model_setup(
            "teacher", {"seed": 0, "teacher": {"model": "builtin", "revison": None, "trust_remote_code": False}}
        )
    with pytest.raises(InputError, match=r"^params\.yaml: student\.trust_remote_code='yes' must be true or false$"):
        read_model_setup("student", params("student", trust_remote_code="yes"))
    with pytest.raises(InputError, match=r"^params\.yaml: builtin\.student\.d_model='big' must be an integer$"):
        read_model_setup(
            "student", {**params("student"), "builtin": {"seed": 0, **BUILTIN, "student": {**TINY, "d_model": "big"}}}
        )


def test_bad_model_path_is_named():
    with pytest.raises(InputError, match=r"^params\.yaml: teacher\.model=/no/such/folder: local folder not found"):
        read_model_setup("teacher", params(model="/no/such/folder"))
    with pytest.raises(InputError, match=r"^params\.yaml: <role>\.model is empty"):
        ModelSourceConfig(model=" ")


# ------------------------------------------------------------------ writing data/models/<role>


def test_local_folder_ref_tracks_weights(tmp_path):
    folder = make_tiny_causal_lm(tmp_path / "lm")
    setup = read_model_setup("teacher", {"seed": 0, "teacher": {**SOURCE, "model": str(folder)}})
    first = run(setup, tmp_path / "models" / "teacher")
    saved = json.loads((tmp_path / "models" / "teacher" / "model_ref.json").read_text())
    assert saved["revision"].startswith("sha256:") and saved["source"] == str(folder.resolve())
    assert sorted(p.name for p in (tmp_path / "models" / "teacher").iterdir()) == ["model_ref.json"]
    make_tiny_causal_lm(folder, seed=1)
    assert run(setup, tmp_path / "models" / "teacher").revision != first.revision


def test_builtin_pretraining_is_reproducible_and_loads(tmp_path):
    refs, logits = [], []
    for attempt in ("a", "b"):
        model_dir = tmp_path / attempt / "student"
        refs.append(run(builtin_setup("student"), model_dir))
        model, tokenizer, ref = load_model(model_dir)
        assert ref.builtin and ref.kind == "causal_lm" and (model_dir / "weights" / "model.safetensors").exists()
        ids = tokenizer("What is zabo?\nA. fruit\nB. tool\nAnswer:", return_tensors="pt").input_ids
        with torch.no_grad():
            logits.append(model(ids).logits)
    assert refs[0].revision == refs[1].revision  # identical weight and tokenizer bytes
    assert torch.equal(logits[0], logits[1])
    teacher = run(builtin_setup("teacher"), tmp_path / "teacher")
    assert teacher.revision != refs[0].revision
    _, teacher_tokenizer, _ = load_model(tmp_path / "teacher")
    assert len(teacher_tokenizer) == 320 and len(tokenizer) == 320  # each role trains its own vocabulary
