"""extract: cached states equal a plain forward's, store layout and attributes, resume, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr

from stages.core.errors import InputError
from stages.modeling.loading import load_model, resolve
from stages.sources.prompts import LETTERS, PromptConfig, format_prompt
from stages.sources.schema import read_split, write_split
from stages.store.batches import collate, shard_batches, tokenize_prompts
from stages.store.extract_config import ExtractConfig, ExtractSetup
from stages.store.extraction import run as extract_split
from stages.store.reader import HiddenStore
from stages.store.teacher_pass import to_store_dtype
from stages.store.writer import DONE, partial_path
from tests.modeling.test_cloze import plain_log_likelihood
from tests.tiny_models import make_tiny_causal_lm, make_tiny_encoder

PROMPT = PromptConfig()
N_EXAMPLES = 11


def make_rows(n: int) -> list[dict]:
    words = ["apple", "stone", "river", "cloud", "fox", "dog", "sky", "brown"]
    rows = []
    for i in range(n):
        n_choices = 2 + i % 3
        question = "Which of these is a fruit? " + " ".join(words[: 1 + (i * 3) % 7])  # varied lengths
        rows.append({"id": f"q{i}", "question": question, "choices": words[i % 4 : i % 4 + n_choices], "answer": 0})
    return rows


def model_stage_dir(root: Path, make, **options) -> Path:
    """`root` laid out like data/models/<role>: the weights `make` writes, and their resolved reference."""
    resolve(str(make(root / "weights", **options)), revision=None, trust_remote_code=False).save(root)
    return root


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory) -> Path:
    return model_stage_dir(tmp_path_factory.mktemp("causal"), make_tiny_causal_lm)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    return model_stage_dir(tmp_path_factory.mktemp("encoder"), make_tiny_encoder)


@pytest.fixture(scope="module")
def split_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "test.parquet"
    write_split(make_rows(N_EXAMPLES), path)
    return path


def reference(model_dir: Path, split_path: Path, letter_ids=None) -> tuple[np.ndarray, np.ndarray | None]:
    """(examples, layers, d_model) and (examples, n_letters) from plain one-example forwards."""
    model, tokenizer, ref = load_model(model_dir, dtype=torch.float32)
    split = read_split(split_path)
    states, logits = [], []
    for question, choices in zip(split.questions, split.choices, strict=True):
        encoded = tokenizer(format_prompt(question, choices, PROMPT), return_tensors="pt")
        special = tokenizer.get_special_tokens_mask(encoded["input_ids"][0].tolist(), already_has_special_tokens=True)
        position = max(i for i, s in enumerate(special) if s == 0)
        with torch.no_grad():
            output = model(**encoded, output_hidden_states=True)
        states.append(torch.stack([h[0, position] for h in output.hidden_states]).numpy())
        if ref.kind == "causal_lm":
            logits.append(output.logits[0, position, letter_ids].numpy())
    return np.stack(states), (np.stack(logits) if logits else None)


def run(model_dir: Path, split_path: Path, out: Path, **overrides) -> HiddenStore:
    config = ExtractConfig(**{"batch_size": 4, "shard_examples": 4, "device": "cpu", **overrides})
    extract_split(ExtractSetup(PROMPT, config), read_split(split_path), model_dir, out)
    return HiddenStore.open(out)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_causal_states_and_logits_match_plain_forward(causal_dir, split_path, tmp_path, monkeypatch, padding_side):
    sides = []

    def collate_on_side(tokens, rows, pad_id, side):
        sides.append(side)
        return collate(tokens, rows, pad_id, padding_side)

    monkeypatch.setattr("stages.store.teacher_pass.collate", collate_on_side)
    store = run(causal_dir, split_path, tmp_path / "h.zarr")
    assert sides  # the patched collate was used
    letter_ids = store.attrs["letter_token_ids"]
    expected, expected_logits = reference(causal_dir, split_path, letter_ids)
    # The tiny BPE has no single ` A` token, so the bare-letter rule applies.
    rule = store.attrs["letter_rule"]
    tokenizer = load_model(causal_dir)[1]
    prefix = " " if rule == "space" else ""
    assert letter_ids == [tokenizer.encode(prefix + x, add_special_tokens=False)[0] for x in LETTERS[:4]]
    assert tokenizer.encode(" A", add_special_tokens=False) != [letter_ids[0]] or rule == "space"
    assert store.shape == (N_EXAMPLES, 4, 32)
    got = np.stack([store.read_layer(slot) for slot in range(4)], axis=1)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3)
    logits = store.option_logits()
    n_choices = read_split(split_path).n_choices
    for row in range(N_EXAMPLES):
        np.testing.assert_allclose(logits[row, : n_choices[row]], expected_logits[row, : n_choices[row]], atol=1e-4)
        assert np.isnan(logits[row, n_choices[row] :]).all()


def test_cloze_readout_matches_a_plain_forward_per_option(causal_dir, split_path, tmp_path):
    store = run(causal_dir, split_path, tmp_path / "h.zarr")
    model, tokenizer, _ = load_model(causal_dir, dtype=torch.float32)
    split = read_split(split_path)
    log_likelihood, per_char = store.cloze(), store.cloze(normalised=True)
    assert store.attrs["has_cloze"] is True and store.attrs["cloze_missing"] is None
    assert store.attrs["cloze"]["template"] == PROMPT.cloze_template
    for row, (question, choices) in enumerate(zip(split.questions, split.choices, strict=True)):
        expected = [plain_log_likelihood(model, tokenizer, question, option) for option in choices]
        np.testing.assert_allclose(log_likelihood[row, : len(choices)], expected, rtol=1e-5, atol=1e-4)
        chars = [len(option) for option in choices]
        np.testing.assert_allclose(per_char[row, : len(choices)], np.array(expected) / chars, rtol=1e-5, atol=1e-4)
        assert np.isnan(log_likelihood[row, len(choices) :]).all() and np.isnan(per_char[row, len(choices) :]).all()


def test_cloze_off_leaves_the_hidden_state_store_as_it_was(causal_dir, split_path, tmp_path):
    on = run(causal_dir, split_path, tmp_path / "on.zarr")
    off = run(causal_dir, split_path, tmp_path / "off.zarr", cloze=False)
    assert off.cloze() is None and off.attrs["has_cloze"] is False
    with pytest.raises(InputError, match=r"off.zarr has none: extract.cloze is false \(set it to true"):
        off.require_cloze("the cloze_kd arm")
    on_files, off_files = tree_bytes(tmp_path / "on.zarr"), tree_bytes(tmp_path / "off.zarr")
    hidden = {name for name in off_files if name.startswith(("hidden/", "option_logits/"))}
    assert hidden and all(on_files[name] == off_files[name] for name in hidden)  # the same bytes
    assert not any(name.startswith("cloze") for name in off_files)
    assert on.attrs["fingerprint"] != off.attrs["fingerprint"]


def test_encoder_states_match_and_no_logits(encoder_dir, split_path, tmp_path):
    store = run(encoder_dir, split_path, tmp_path / "h.zarr", layers=[0, -2])  # early stop after block 1
    expected, _ = reference(encoder_dir, split_path)
    assert store.layers == [0, 1] and store.n_teacher_layers == 3
    np.testing.assert_allclose(store.read_layer(1), expected[:, 1], rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(store.read_layer(store.index_of(0, "layer")), expected[:, 0], rtol=2e-3, atol=2e-3)
    assert store.option_logits() is None
    assert store.attrs["has_option_logits"] is False
    assert store.cloze() is None and store.attrs["has_cloze"] is False
    with pytest.raises(
        InputError, match="has none: teacher .* has no LM head \\(encoder-only\\), so it scores no text"
    ):
        store.require_cloze("cloze labels")


def test_attributes_layout_and_layer_subset(causal_dir, split_path, tmp_path):
    store = run(causal_dir, split_path, tmp_path / "h.zarr", layers=[-1, 1])
    attrs = store.attrs
    assert attrs["example_ids"] == [f"q{i}" for i in range(N_EXAMPLES)]
    assert store.layers == [1, 3] and attrs["n_examples"] == N_EXAMPLES and attrs["d_model"] == 32
    assert attrs["complete"] is True and attrs["dtype"] == "float16" and attrs["teacher"]["kind"] == "causal_lm"
    assert attrs["prompt"]["digest"] == PROMPT.digest and attrs["position_rule"] == "last_non_special"
    assert len(attrs["letter_token_ids"]) == 4
    hidden = store.group["hidden"]
    assert hidden.dtype == np.float16 and hidden.chunks == (4, 1, 32) and hidden.shards == (4, 2, 32)
    assert not partial_path(tmp_path / "h.zarr").exists()
    assert not (tmp_path / "h.zarr" / DONE).exists()


def test_float16_overflow_names_layer_and_example():
    hidden = np.zeros((2, 3, 4), dtype=np.float32)
    hidden[1, 2, 3] = 1e6
    with pytest.raises(InputError, match="teacher layer 7 of example b .*extract.dtype: float32"):
        to_store_dtype(hidden, "float16", ["a", "b"], [0, 5, 7])
    assert to_store_dtype(hidden, "float32", ["a", "b"], [0, 5, 7]) is hidden


def test_prompt_longer_than_the_teachers_positions_names_the_example(split_path, tmp_path):
    model_stage_dir(tmp_path, make_tiny_encoder, max_positions=12)  # BERT: a 12-row position table
    split = read_split(split_path)
    prompts = [format_prompt(q, c, PROMPT) for q, c in zip(split.questions, split.choices, strict=True)]
    lengths = tokenize_prompts(load_model(tmp_path)[1], prompts, split.ids).lengths
    message = f"example {split.ids[int(np.argmax(lengths))]}: its prompt has {lengths.max()} teacher tokens"
    with pytest.raises(InputError, match=message + ", more than the teacher's 12 positions"):
        run(tmp_path, split_path, tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()


def test_bad_layer_is_refused():
    with pytest.raises(
        InputError, match=r"extract.layers=9 but the teacher has layers 0..3 \(or -4..-1 from the last\)"
    ):
        ExtractConfig(layers=[9]).resolve_layers(4)
    assert ExtractConfig(layers=[-1, 0, 4 - 1]).resolve_layers(4) == [0, 3]


def test_unfinished_store_refused(causal_dir, split_path, tmp_path):
    out = tmp_path / "h.zarr"
    run(causal_dir, split_path, out)
    zarr.open_group(str(out), mode="r+").attrs["complete"] = False
    with pytest.raises(InputError, match="unfinished"):
        HiddenStore.open(out)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


KILL_SCRIPT = """
import os, sys
from pathlib import Path
import stages.store.writer as writer
from stages.store.batches import collate, shard_batches, tokenize_prompts
from stages.store.extract_config import ExtractConfig, ExtractSetup
from stages.store.extraction import run
from stages.sources.prompts import PromptConfig
from stages.sources.schema import read_split

original = writer.write_shard
def write_then_die(group, layout, shard, *rest):
    if shard == 2:  # shards 0 and 1 are finished: die like a SIGKILL, no cleanup
        os.kill(os.getpid(), 9)
    original(group, layout, shard, *rest)
writer.write_shard = write_then_die
config = ExtractConfig(batch_size=4, shard_examples=4, device="cpu")
run(ExtractSetup(PromptConfig(), config), read_split(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
"""


@pytest.mark.slow
def test_killed_run_resumes_to_identical_bytes(causal_dir, split_path, tmp_path):
    out = tmp_path / "killed.zarr"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(split_path), str(causal_dir), str(out)], env=env, check=False
    )
    assert result.returncode == -9
    partial = partial_path(out)
    assert sorted(p.name for p in (partial / DONE).iterdir()) == ["0", "1"] and not out.exists()
    run(causal_dir, split_path, out)
    run(causal_dir, split_path, tmp_path / "clean.zarr")
    assert tree_bytes(out) == tree_bytes(tmp_path / "clean.zarr")
    assert not partial.exists()  # renamed into place


def test_device_map_auto_stores_the_same_bytes(causal_dir, split_path, tmp_path, monkeypatch):
    """extract.device_map (accelerate big-model loading) moves the weights, never the stored values."""
    import stages.modeling.loading

    device_maps = []

    def load_and_record(*args, **kwargs):
        device_maps.append(kwargs["device_map"])
        return load_model(*args, **kwargs)

    monkeypatch.setattr(stages.modeling.loading, "load_model", load_and_record)
    mapped = run(causal_dir, split_path, tmp_path / "mapped.zarr", device_map="auto")
    plain = run(causal_dir, split_path, tmp_path / "plain.zarr")
    # On one device transformers infers the map but sets no hf_device_map, so check what extract passed.
    assert device_maps == ["auto", None]
    np.testing.assert_array_equal(mapped.group["hidden"][:], plain.group["hidden"][:])
    np.testing.assert_array_equal(mapped.option_logits(), plain.option_logits())
    assert tree_bytes(tmp_path / "mapped.zarr") == tree_bytes(tmp_path / "plain.zarr")


def test_collate_pads_on_either_side_and_tracks_the_answer(causal_dir):
    tokenizer = load_model(causal_dir)[1]
    tokens = tokenize_prompts(tokenizer, ["Answer:", "A longer prompt here. Answer:"], ["a", "b"])
    rows = np.array([0, 1])
    for side in ("left", "right"):
        batch = collate(tokens, rows, pad_id=-1, padding_side=side)
        for i, row in enumerate(rows):
            kept = batch.input_ids[i][batch.attention_mask[i] == 1].tolist()
            assert kept == tokens.input_ids[row].tolist()
            answer = batch.input_ids[i, batch.answer_position[i]]
            assert answer == tokens.input_ids[row][tokens.answer_index[row]]
            assert batch.position_ids[i, batch.answer_position[i]] == tokens.answer_index[row]
    assert batch.input_ids[0, -1] == -1  # right padding: the short row ends in padding


def test_shard_batches_sort_by_length_inside_the_shard():
    lengths = np.array([5, 1, 4, 2, 9, 3])
    assert [b.tolist() for b in shard_batches(lengths, 0, 4, 2)] == [[1, 3], [2, 0]]
    assert [b.tolist() for b in shard_batches(lengths, 4, 6, 8)] == [[5, 4]]


REPO_PARAMS = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


def write_params(folder: Path, **extract) -> Path:
    params = {
        "prompt": {
            "template": PROMPT.template,
            "option_format": PROMPT.option_format,
            "cloze_template": PROMPT.cloze_template,
            "on_too_long": PROMPT.on_too_long,
            "chat_template": False,
            "shots": 0,
        },  # fmt: skip
        "extract": {**REPO_PARAMS["extract"], "batch_size": 4, "shard_examples": 4, "device": "cpu", **extract},
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def cli(split_path: Path, model_dir: Path, out: Path, params: Path) -> list[str]:
    return ["extract", "test", "--data", str(split_path), "--teacher", str(model_dir), "--out", str(out)] + [
        "--params-file",
        str(params),
    ]


def test_cli_writes_the_store_and_refuses_bad_params(causal_dir, split_path, tmp_path):
    from typer.testing import CliRunner

    from stages.__main__ import build_app

    out = tmp_path / "h.zarr"
    result = CliRunner().invoke(build_app("extract"), cli(split_path, causal_dir, out, write_params(tmp_path)))
    assert result.exit_code == 0, result.output
    assert HiddenStore.open(out).shape == (N_EXAMPLES, 4, 32)
    bad = write_params(tmp_path, dtype="int8")
    result = CliRunner().invoke(build_app("extract"), cli(split_path, causal_dir, tmp_path / "bad.zarr", bad))
    assert (
        result.exit_code == 2 and "params.yaml: extract.dtype='int8' must be one of float16, float32" in result.output
    )
    assert not (tmp_path / "bad.zarr").exists()


@pytest.mark.slow
def test_two_processes_write_the_same_bytes(causal_dir, split_path, tmp_path):
    params = write_params(tmp_path)
    out = tmp_path / "two.zarr"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    result = subprocess.run(
        [*launcher, "-m", "stages", *cli(split_path, causal_dir, out, params)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run(causal_dir, split_path, tmp_path / "one.zarr")
    assert tree_bytes(out) == tree_bytes(tmp_path / "one.zarr")


def test_encoder_forward_stops_after_the_deepest_requested_block(encoder_dir):
    from stages.store.forward import LayerGatherer, decoder_layers

    model, tokenizer, _ = load_model(encoder_dir, dtype=torch.float32)
    tokens = tokenize_prompts(tokenizer, ["Answer:", "Which is a fruit? Answer:"], ["a", "b"])
    batch = collate(tokens, np.array([0, 1]), tokenizer.pad_token_id, tokenizer.padding_side)
    ran = []
    for index, block in enumerate(decoder_layers(model.base_model)):
        block.register_forward_hook(lambda *_, index=index: ran.append(index))
    hidden, logits, _ = LayerGatherer(model, [1], None)(batch)
    assert ran == [0] and hidden.shape == (2, 1, 32) and logits is None


def test_a_store_larger_than_the_free_disk_space_stops_before_extracting(causal_dir, split_path, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))  # 1 kB free
    with pytest.raises(InputError, match=(
        r"h.zarr: the store needs about 17.5 kB \(11 examples x 4 layers x 32 d_model, float16, x5 with "
        r"extract.option_states\) but 1 kB are free there; free space, store fewer layers \(extract.layers\) or use "
        r"extract.dtype: float16$"
    )):  # fmt: skip
        run(causal_dir, split_path, tmp_path / "h.zarr")
    assert not list(tmp_path.iterdir())  # nothing written, not even a partial store
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 0, 10**9))
    assert run(causal_dir, split_path, tmp_path / "h.zarr").example_ids == read_split(split_path).ids
