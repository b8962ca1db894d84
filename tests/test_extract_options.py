"""extract's per-option states: decoders at the end of each option's line of the same prompt, encoders from
(question, option) sequence pairs; both equal to a plain forward's `output_hidden_states`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.core.errors import InputError
from stages.modeling.loading import load_model
from stages.sources.prompts import PromptConfig, format_prompt, option_line_ends
from stages.sources.schema import read_split, write_split
from stages.store.batches import collate, prefix_end, tokenize_prompts
from stages.store.extract_config import ExtractConfig, ExtractSetup
from stages.store.extraction import run as extract_split
from stages.store.reader import OPTION_STATES, HiddenStore
from tests.test_extract import N_EXAMPLES, make_rows, model_stage_dir, run
from tests.tiny_models import make_tiny_causal_lm, make_tiny_encoder

ODD_PROMPT = PromptConfig(
    template="Q: {question}\n\nOptions:\n{options}\n\nThe answer is", option_format="({letter}) {text};"
)


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory):
    return model_stage_dir(tmp_path_factory.mktemp("causal"), make_tiny_causal_lm)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return model_stage_dir(tmp_path_factory.mktemp("encoder"), make_tiny_encoder)


@pytest.fixture(scope="module")
def split_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "test.parquet"
    write_split(make_rows(N_EXAMPLES), path)
    return path


def test_option_line_ends_point_past_each_option_line():
    for config in (PromptConfig(), ODD_PROMPT):
        prompt = format_prompt("Why?", ["a b", "cd", "e"], config)
        ends = option_line_ends("Why?", ["a b", "cd", "e"], config)
        lines = [config.option_format.format(letter=x, text=t) for x, t in zip("ABC", ["a b", "cd", "e"], strict=True)]
        assert [prompt[:end].splitlines()[-1] for end in ends] == lines


def decoder_reference(model_dir, split, prompt: PromptConfig) -> list[np.ndarray]:
    """Per example (n_options, n_layers, d_model): plain forward, token holding each option line's last character."""
    model, tokenizer, _ = load_model(model_dir, dtype=torch.float32)
    states = []
    for question, choices in zip(split.questions, split.choices, strict=True):
        encoded = tokenizer(format_prompt(question, choices, prompt), return_tensors="pt")
        tokens = [encoded.char_to_token(end - 1) for end in option_line_ends(question, choices, prompt)]
        with torch.no_grad():
            hidden = model(**encoded, output_hidden_states=True).hidden_states
        states.append(torch.stack([h[0, tokens] for h in hidden], dim=1).numpy())
    return states


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_decoder_option_states_match_plain_forward(causal_dir, split_path, tmp_path, monkeypatch, padding_side):
    monkeypatch.setattr(
        "stages.store.teacher_pass.collate", lambda tokens, rows, pad, side: collate(tokens, rows, pad, padding_side)
    )
    store = run(causal_dir, split_path, tmp_path / "h.zarr")
    split = read_split(split_path)
    assert store.attrs["has_option_states"] and store.attrs["option_rule"] == "option_line_end"
    assert store.group[OPTION_STATES].shape == (N_EXAMPLES, 4, 4, 32)
    expected = decoder_reference(causal_dir, split, PromptConfig())
    for layer in range(4):
        got = store.read_option_layer(layer, 5)  # padded to 5 slots
        for row, n in enumerate(split.n_choices):
            np.testing.assert_allclose(got[row, :n], expected[row][:n, layer], rtol=2e-3, atol=2e-3)
            assert (got[row, n:] == 0).all()


def test_option_positions_follow_any_template_and_slow_tokenizers_agree(causal_dir, split_path):
    split = read_split(split_path)
    tokenizer = load_model(causal_dir)[1]
    prompts = [format_prompt(q, c, ODD_PROMPT) for q, c in zip(split.questions, split.choices, strict=True)]
    ends = [option_line_ends(q, c, ODD_PROMPT) for q, c in zip(split.questions, split.choices, strict=True)]
    tokens = tokenize_prompts(tokenizer, prompts, split.ids, option_ends=ends)
    for row, (prompt, row_ends) in enumerate(zip(prompts, ends, strict=True)):
        encoded = tokenizer(prompt)
        assert tokens.option_index[row, : len(row_ends)].tolist() == [encoded.char_to_token(e - 1) for e in row_ends]
        by_prefix = [prefix_end(tokenizer, prompt[:e], "x") for e in row_ends]
        assert by_prefix == tokens.option_index[row, : len(row_ends)].tolist()
        assert (tokens.option_index[row, len(row_ends) :] == -1).all()


@pytest.mark.parametrize("pooling", ["cls", "mean", "last"])
def test_encoder_option_states_are_sequence_pairs(encoder_dir, split_path, tmp_path, pooling):
    store = run(encoder_dir, split_path, tmp_path / "e.zarr", option_pooling=pooling)
    assert store.attrs["option_rule"] == f"pair_{pooling}"
    split = read_split(split_path)
    model, tokenizer, _ = load_model(encoder_dir, dtype=torch.float32)
    got = np.stack([store.read_option_layer(layer, 4) for layer in range(3)], axis=2)  # (n, slots, layers, d)
    for row, (question, choices) in enumerate(zip(split.questions, split.choices, strict=True)):
        for slot, text in enumerate(choices):
            encoded = tokenizer(question, text, return_tensors="pt", return_special_tokens_mask=True)
            content = encoded.pop("special_tokens_mask")[0] == 0
            with torch.no_grad():
                hidden = torch.stack(model(**encoded, output_hidden_states=True).hidden_states)[:, 0]
            expected = {"cls": hidden[:, 0], "last": hidden[:, int(torch.nonzero(content)[-1])],
                        "mean": hidden[:, content].mean(1)}[pooling]  # fmt: skip
            np.testing.assert_allclose(got[row, slot], expected.numpy(), rtol=2e-3, atol=2e-3)
        assert (got[row, len(choices) :] == 0).all()


def test_option_states_off_leave_the_store_as_before(causal_dir, split_path, tmp_path):
    off = run(causal_dir, split_path, tmp_path / "off.zarr", option_states=False)
    on = run(causal_dir, split_path, tmp_path / "on.zarr")
    assert OPTION_STATES not in off.group and off.attrs["has_option_states"] is False
    assert "option_states" not in off.attrs and off.attrs["fingerprint"] != on.attrs["fingerprint"]
    np.testing.assert_array_equal(off.read_layer(2), on.read_layer(2))
    with pytest.raises(InputError, match=r"off.zarr has no per-option states: extract.option_states is false"):
        off.read_option_layer(0, 4)


def test_option_states_resume_with_the_same_fingerprint(causal_dir, split_path, tmp_path, monkeypatch):
    """A killed run's finished shards are kept; the resumed store equals a fresh one, option states included."""
    import stages.store.writer as writer

    calls = []
    original = writer.write_shard

    def die_after_one(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(writer, "write_shard", die_after_one)
    config = ExtractConfig(batch_size=4, shard_examples=4, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        extract_split(ExtractSetup(PromptConfig(), config), read_split(split_path), causal_dir, tmp_path / "r.zarr")
    monkeypatch.setattr(writer, "write_shard", original)
    resumed = run(causal_dir, split_path, tmp_path / "r.zarr")
    fresh = run(causal_dir, split_path, tmp_path / "f.zarr")
    for layer in range(4):
        np.testing.assert_array_equal(resumed.read_option_layer(layer, 4), fresh.read_option_layer(layer, 4))
    assert isinstance(resumed, HiddenStore)
