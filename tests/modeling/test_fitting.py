"""prompt.on_too_long (stages/modeling/fitting.py), applied by `prepare`: error, skip and truncate on MMLU-like
long questions, and the prepared split, the store and its attributes staying aligned example for example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stages.__main__ import build_app
from stages.core.errors import InputError
from stages.modeling.fitting import ELLIPSIS, PromptFit, Reader
from stages.sources.prompts import PromptConfig
from stages.sources.schema import SPLITS, prompt_fit, read_split
from stages.store.extract_config import ExtractConfig, ExtractSetup
from stages.store.extraction import run as extract_split
from stages.store.reader import HiddenStore
from tests.test_extract import model_stage_dir
from tests.tiny_models import make_tiny_causal_lm, make_tiny_encoder

ROOT = Path(__file__).resolve().parents[2]
LONG = "In the history of the Byzantine empire, which event followed the council described here? " * 6


def rows(n: int, long_every: int = 4) -> list[dict]:
    """Short questions, and every `long_every`-th one as long as MMLU's history passages."""
    return [{"id": f"q{i}", "question": (LONG if i % long_every == 0 else "") + f"Which is item {i}?",
             "choices": ["apple", "stone", "river", "cloud"], "answer": i % 4} for i in range(n)]  # fmt: skip


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:  # BERT-style: a 64-row position table, MMLU-like prompts exceed it
    return model_stage_dir(tmp_path_factory.mktemp("encoder"), make_tiny_encoder, max_positions=64)


@pytest.fixture(scope="module")
def reader(encoder_dir) -> Reader:
    return Reader.load("teacher", encoder_dir)


def fitter(reader: Reader, policy: str) -> PromptFit:
    return PromptFit(PromptConfig(on_too_long=policy), [reader])


def test_error_names_the_example_and_the_fix(reader):
    with pytest.raises(InputError, match=(
        r"^example q0 \(test\): its prompt has \d+ teacher tokens, more than the teacher's 64 positions "
        r"\(max_position_embeddings\); set prompt.on_too_long: skip or truncate, or use another teacher$"
    )):  # fmt: skip
        fitter(reader, "error")("test", rows(8))


def test_skip_drops_exactly_the_long_examples_and_counts_them(reader, caplog):
    kept, note = fitter(reader, "skip")("test", rows(8))
    assert [row["id"] for row in kept] == ["q1", "q2", "q3", "q5", "q6", "q7"]  # order kept
    assert note == {"policy": "skip", "skipped": 2, "truncated": 0, "examples": ["q0", "q4"]}
    assert "test: 2 prompts too long for the models' positions: 2 skipped, 0 truncated" in caplog.text


def test_truncate_cuts_the_question_from_the_left_and_keeps_options_and_cue(reader):
    fit = fitter(reader, "truncate")
    kept, note = fit("test", rows(8))
    assert [row["id"] for row in kept] == [f"q{i}" for i in range(8)] and note["truncated"] == 2
    first = kept[0]
    assert first["question"].startswith(ELLIPSIS) and first["question"].endswith("Which is item 0?")
    assert LONG.endswith(first["question"].removeprefix(ELLIPSIS).removesuffix("Which is item 0?"))  # a suffix
    assert first["choices"] == ["apple", "stone", "river", "cloud"] and first["answer"] == 0
    assert fit.overflow(first["question"], first["choices"]) is None  # fits now
    longer = ELLIPSIS + rows(1)[0]["question"][-len(first["question"]) :]  # one more character does not fit
    assert fit.overflow(longer, first["choices"]) is not None
    assert kept[1] == rows(8)[1]  # short ones untouched
    too_wide = [{"id": "w", "question": "Q?", "choices": ["x " * 80, "y"], "answer": 0}]
    with pytest.raises(InputError, match=r"example w \(test\): .*, even with the question cut away: its options"):
        fit("test", too_wide)


@pytest.mark.parametrize("policy", ["skip", "truncate"])
def test_prepare_then_extract_keep_parquet_and_store_aligned(policy, encoder_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    student = model_stage_dir(tmp_path / "student", make_tiny_causal_lm)
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/mmlu_like.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows(48)))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(dataset="data/raw/mmlu_like.jsonl", labeled=8, transfer=8, val=8, test=8)
    params["prompt"]["on_too_long"] = policy
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    options = ["--raw", "data/raw", "--out", "prepared", "--teacher", str(encoder_dir), "--student", str(student)]
    done = CliRunner().invoke(build_app("prepare"), ["prepare", *options])
    assert done.exit_code == 0, done.output
    notes = {name: prompt_fit(tmp_path / "prepared" / f"{name}.parquet") for name in SPLITS}
    assert sum(note[f"{policy}ped" if policy == "skip" else "truncated"] for note in notes.values()) > 0
    split = read_split(tmp_path / "prepared/test.parquet")
    config = ExtractConfig(batch_size=4, shard_examples=4, device="cpu")
    extract_split(ExtractSetup(PromptConfig(on_too_long=policy), config), split, encoder_dir, tmp_path / "t.zarr",
                  fitted=notes["test"])  # fmt: skip
    store = HiddenStore.open(tmp_path / "t.zarr")
    assert store.example_ids == split.ids  # the store holds exactly the prepared examples, in order
    assert store.attrs["prompt_fit"] == notes["test"]
    long_ids = {row["id"] for row in rows(48) if row["question"].startswith(LONG)}
    if policy == "skip":
        assert not long_ids & set(split.ids)
    else:
        assert all(q.startswith(ELLIPSIS) for i, q in zip(split.ids, split.questions, strict=True) if i in long_ids)
