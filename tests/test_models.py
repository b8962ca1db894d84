import json

import pytest
import torch

from stages.builtin_models import BuiltinModelConfig, build_tokenizer
from stages.errors import InputError
from stages.hf_models import load_model
from stages.models import ModelSourceConfig, write_model
from stages.prompts import LETTERS
from tests.tiny_models import make_tiny_causal_lm

TASK = {"n_categories": 4, "words_per_category": 4, "n_choices": 4, "n_train": 8, "n_val": 4, "n_test": 4}
TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "vocab_size": 320, "steps": 3, "batch_size": 4}
BUILTIN = {"task": TASK, "teacher": {**TINY, "mc_fraction": 0.5, "letter_fraction": 0.3}, "student": TINY}


def test_tokenizer_letters_single_and_any_utf8_round_trips():
    tokenizer = build_tokenizer(["zabo is a fruit. kemi is a tool."] * 50, vocab_size=300)
    for letter in LETTERS:
        assert len(tokenizer.encode(letter)) == 1 and len(tokenizer.encode(" " + letter)) == 1
    text = "°C, √2, 日本 — emoji 🙂 and\ttabs"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text and tokenizer.unk_token_id not in ids


def test_local_folder_ref_tracks_weights(tmp_path):
    folder = make_tiny_causal_lm(tmp_path / "lm")
    config = ModelSourceConfig("teacher", model=str(folder))
    first = write_model(config, {}, 0, tmp_path / "models" / "teacher")
    saved = json.loads((tmp_path / "models" / "teacher" / "model_ref.json").read_text())
    assert saved["revision"].startswith("sha256:") and saved["source"] == str(folder.resolve())
    assert sorted(p.name for p in (tmp_path / "models" / "teacher").iterdir()) == ["model_ref.json"]
    make_tiny_causal_lm(folder, seed=1)
    assert write_model(config, {}, 0, tmp_path / "models" / "teacher").revision != first.revision


def test_builtin_pretraining_is_reproducible_and_loads(tmp_path):
    refs, logits = [], []
    for run in ("a", "b"):
        model_dir = tmp_path / run / "student"
        refs.append(write_model(ModelSourceConfig("student"), BUILTIN, 0, model_dir))
        model, tokenizer, ref = load_model(model_dir)
        assert ref.builtin and ref.kind == "causal_lm" and (model_dir / "weights" / "model.safetensors").exists()
        ids = tokenizer("What is zabo?\nA. fruit\nB. tool\nAnswer:", return_tensors="pt").input_ids
        with torch.no_grad():
            logits.append(model(ids).logits)
    assert refs[0].revision == refs[1].revision  # identical weight and tokenizer bytes
    assert torch.equal(logits[0], logits[1])
    teacher = write_model(ModelSourceConfig("teacher"), BUILTIN, 0, tmp_path / "teacher")
    assert teacher.revision != refs[0].revision
    _, teacher_tokenizer, _ = load_model(tmp_path / "teacher")
    assert len(teacher_tokenizer) == 320 and len(tokenizer) == 320  # each role trains its own vocabulary


def test_bad_model_path_and_params():
    with pytest.raises(InputError, match=r"teacher.model=/no/such/folder: local folder not found"):
        ModelSourceConfig("teacher", model="/no/such/folder")
    with pytest.raises(InputError, match=r"builtin.<role>.d_model=30"):
        BuiltinModelConfig.from_params("teacher", {**TINY, "d_model": 30, "n_heads": 4})
    with pytest.raises(InputError, match="unknown key"):
        BuiltinModelConfig.from_params("student", {**TINY, "depth": 3})
