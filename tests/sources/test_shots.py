"""prompt.shots: the shot pool comes from labeled only, is fixed by seed and unchanged by a labeled-budget sweep;
the same solved examples precede every prompt, for the teacher's store and the student alike."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stages.core.errors import InputError
from stages.modeling.loading import load_model
from stages.sources.data_config import PrepareConfig
from stages.sources.preparation import PreparePaths, PrepareSetup
from stages.sources.preparation import run as prepare
from stages.sources.prompts import PromptConfig, format_prompt
from stages.sources.schema import read_split
from stages.sources.shots import SHOT_POOL, shots_prefix
from stages.store.extract_config import ExtractConfig, ExtractSetup
from stages.store.extraction import run as extract_split
from stages.store.reader import HiddenStore
from stages.student.data import encode_split
from tests.test_extract import make_rows, model_stage_dir
from tests.tiny_models import make_tiny_causal_lm


def prepared(tmp_path, labeled: int, seed: int = 0):
    rows = [{**row, "id": f"q{i}", "split": "train" if i < 60 else "test"} for i, row in enumerate(make_rows(80))]
    source = tmp_path / "pool.jsonl"
    source.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    config = PrepareConfig(dataset=str(source), labeled=labeled, transfer=20, val=8, test=8)
    out = tmp_path / f"prepared-{labeled}-{seed}"
    prepare(PrepareSetup(config, seed, None), PreparePaths(raw=tmp_path, out=out))
    return out


def test_the_pool_is_labeled_only_and_unchanged_by_a_labeled_sweep(tmp_path):
    small, large, other_seed = prepared(tmp_path, 10), prepared(tmp_path, 30), prepared(tmp_path, 10, seed=1)
    pool = read_split(small / "shots.parquet")
    assert pool.ids == read_split(small / "labeled.parquet").ids[:SHOT_POOL]
    assert (small / "shots.parquet").read_bytes() == (large / "shots.parquet").read_bytes()
    assert read_split(other_seed / "shots.parquet").ids != pool.ids
    others = {i for name in ("transfer", "val", "test") for i in read_split(small / f"{name}.parquet").ids}
    assert not others & set(pool.ids)


def test_prefix_is_k_solved_examples(tmp_path):
    folder = prepared(tmp_path, 10)
    pool = read_split(folder / "shots.parquet")
    prefix = shots_prefix(folder / "shots.parquet", PromptConfig(shots=2))
    first = format_prompt(pool.questions[0], pool.choices[0]) + " " + "ABCD"[pool.answers[0]]
    assert prefix.startswith(first + "\n\n") and prefix.count("\nAnswer: ") == 2 and prefix.endswith("\n\n")
    assert shots_prefix(None, PromptConfig()) == ""
    with pytest.raises(InputError, match=r"prompt.shots=8 but .*shots.parquet holds 3 labeled examples"):
        shots_prefix(prepared(tmp_path, 3) / "shots.parquet", PromptConfig(shots=8))
    with pytest.raises(InputError, match=r"prompt.shots=9 must be between 0 and 8"):
        PromptConfig(shots=9)


def test_teacher_and_student_read_the_shots(tmp_path):
    folder = prepared(tmp_path, 10)
    model_dir = model_stage_dir(tmp_path / "teacher", make_tiny_causal_lm)
    prompt = PromptConfig(shots=2)
    split = read_split(folder / "test.parquet")
    config = ExtractConfig(batch_size=4, shard_examples=4, device="cpu")
    extract_split(ExtractSetup(prompt, config), split, model_dir, tmp_path / "s.zarr", shots=folder / "shots.parquet")
    extract_split(ExtractSetup(PromptConfig(), config), split, model_dir, tmp_path / "p.zarr")
    store, plain = HiddenStore.open(tmp_path / "s.zarr"), HiddenStore.open(tmp_path / "p.zarr")
    assert store.attrs["fingerprint"] != plain.attrs["fingerprint"] and "shots_sha256" in store.attrs
    model, tokenizer, _ = load_model(model_dir, dtype=torch.float32)
    prefix = shots_prefix(folder / "shots.parquet", prompt)
    text = prefix + format_prompt(split.questions[0], split.choices[0], prompt)
    with torch.no_grad():
        hidden = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states
    np.testing.assert_allclose(store.read_layer(3)[0], hidden[3][0, -1].numpy(), rtol=2e-3, atol=2e-3)
    assert not np.allclose(store.read_layer(3)[0], plain.read_layer(3)[0], atol=1e-2)
    encoded = encode_split(split, tokenizer, prompt, prefix=prefix)
    assert encoded.token_ids[0] == tokenizer(text)["input_ids"]
