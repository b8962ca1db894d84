"""Builtin models (stages/modeling/builtin.py): the tokenizer and the `builtin.<role>` config."""

from __future__ import annotations

import dataclasses

import pytest

from stages.core.config import build
from stages.core.errors import InputError
from stages.modeling.builtin import BuiltinModelConfig, build_tokenizer
from stages.sources.builtin_world import CorpusMix
from stages.sources.prompts import LETTERS

TINY = {**dataclasses.asdict(BuiltinModelConfig()), "d_model": 16, "n_layers": 1, "n_heads": 2, "vocab_size": 320}


def test_tokenizer_letters_single_and_any_utf8_round_trips():
    tokenizer = build_tokenizer(["zabo is a fruit. kemi is a tool."] * 50, vocab_size=300)
    for letter in LETTERS:
        assert len(tokenizer.encode(letter)) == 1 and len(tokenizer.encode(" " + letter)) == 1
    text = "°C, √2, 日本 — emoji 🙂 and\ttabs"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text and tokenizer.unk_token_id not in ids


def test_config_from_params_and_its_corpus_mix():
    teacher = build(BuiltinModelConfig, {**TINY, "mc_fraction": 0.5, "letter_fraction": 0.3}, "builtin.teacher")
    assert teacher == BuiltinModelConfig(**{**TINY, "mc_fraction": 0.5, "letter_fraction": 0.3})
    assert teacher.mix == CorpusMix(mc_fraction=0.5, letter_fraction=0.3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d_model": 30, "n_heads": 4}, r"^params\.yaml: builtin\.<role>\.d_model=30 must split into n_heads=4 heads"),
        ({"d_model": 18, "n_heads": 2}, r"builtin\.<role>\.d_model=18 must split into n_heads=2 heads of even size"),
        ({"steps": 0}, r"^params\.yaml: builtin\.<role>\.steps=0 must be >= 1$"),
        ({"vocab_size": 299}, r"^params\.yaml: builtin\.<role>\.vocab_size=299: needs >= 300"),
        ({"lr": 1.5}, r"^params\.yaml: builtin\.<role>\.lr=1\.5 must be in \(0, 1\)$"),
        ({"letter_bias": 2}, r"^params\.yaml: builtin\.<role>\.letter_bias=2\.0 must be a number in \[0, 1\]$"),
        ({"letter_fraction": 0.6, "text_fraction": 0.6}, r"letter_fraction \+ text_fraction must be <= 1"),
        ({"lr": "1e-2"}, r"^params\.yaml: builtin\.teacher\.lr='1e-2' must be a number \(YAML 1\.1 reads 1e-3 as text"),
        ({"depth": 3}, r"^params\.yaml: builtin\.teacher\.depth is not a parameter; builtin\.teacher has: d_model"),
        (
            {"d_modle": 16},
            r"^params\.yaml: builtin\.teacher\.d_modle is not a parameter; did you mean builtin\.teacher\.d_model\?$",
        ),
    ],
)
def test_bad_config(change, message):
    with pytest.raises(InputError, match=message):
        build(BuiltinModelConfig, {**TINY, **change}, "builtin.teacher")
