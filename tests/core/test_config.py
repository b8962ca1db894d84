"""The params.yaml contract (stages/core/config.py): build, type checks, their words, field docs, the seed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest
import yaml

from stages.core.config import (
    NOT_A_PARAM,
    SEED,
    Section,
    SeedConfig,
    build,
    check_type,
    describe,
    dotted,
    field_docs,
    parameter_help,
    parameter_lines,
    read_seed,
)
from stages.core.errors import InputError


@dataclass(frozen=True)
class Example:
    """A config like a stage's: one field per kind of type the contract checks."""

    steps: int = 300
    """Optimiser steps."""
    lr: float = 1e-3
    """Peak learning
    rate, over two lines."""
    mode: Literal["joint", "sequential"] = "joint"
    """joint | sequential."""
    layers: Literal["all"] | list[int] = "all"
    """all, or layer indices."""
    device_map: str | None = None
    """null or a device map."""
    lora: bool = False
    """LoRA or not."""
    undocumented: int = 1
    seed: int = dataclasses.field(default=0, metadata=NOT_A_PARAM)
    """Fixed by the caller (the global seed), not read from this section."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise InputError(f"params.yaml: example.steps={self.steps} must be >= 1")


@dataclass(frozen=True)
class Extended(Example):
    extra: float = 0.5
    """A field of the subclass."""


VALUES = {
    "steps": 300,
    "lr": 1e-3,
    "mode": "joint",
    "layers": "all",
    "device_map": None,
    "lora": False,
    "undocumented": 1,
    "seed": 0,
}


def with_(**changes) -> dict:
    return {**VALUES, **changes}


def without(*keys: str) -> dict:
    return {key: value for key, value in VALUES.items() if key not in keys}


# ------------------------------------------------------------------ build


def test_build_returns_the_checked_config():
    assert build(Example, VALUES, "example") == Example()
    built = build(Example, with_(lr=1, layers=[0, -1], device_map="auto", mode="sequential"), "example")
    assert built == Example(lr=1.0, layers=[0, -1], device_map="auto", mode="sequential")
    assert type(built.lr) is float  # an int accepted as a float is converted


def test_unknown_key_suggests_the_close_parameter():
    values = {**without("steps"), "stpes": 300}
    with pytest.raises(
        InputError, match=r"^params\.yaml: example\.stpes is not a parameter; did you mean example\.steps\?$"
    ):
        build(Example, values, "example")


def test_unknown_key_without_a_close_match_lists_the_keys():
    with pytest.raises(InputError) as raised:
        build(Example, with_(optimizer="adam"), "train")
    assert str(raised.value) == (
        "params.yaml: train.optimizer is not a parameter; "
        "train has: steps, lr, mode, layers, device_map, lora, undocumented, seed"
    )


def test_unknown_top_level_key():
    with pytest.raises(InputError, match=r"^params\.yaml: sed is not a parameter; did you mean seed\?$"):
        build(SeedConfig, {"sed": 1}, "")
    with pytest.raises(InputError, match=r"^params\.yaml: colour is not a parameter; the top level has: seed$"):
        build(SeedConfig, {"seed": 1, "colour": 1}, "")


def test_unknown_key_is_reported_before_missing_ones():
    with pytest.raises(InputError, match=r"example\.stpes is not a parameter"):
        build(Example, {"stpes": 1}, "example")


def test_missing_key_is_named_with_its_documentation():
    with pytest.raises(InputError) as raised:
        build(Example, without("lr"), "train")
    assert str(raised.value) == "params.yaml: train.lr is missing (Peak learning rate, over two lines.)"
    with pytest.raises(InputError) as raised:
        build(Example, without("undocumented"), "train")
    assert str(raised.value) == "params.yaml: train.undocumented is missing"


def test_not_a_mapping():
    with pytest.raises(InputError, match=r"^params\.yaml: `train` must be a mapping of parameters; got \[1, 2\]$"):
        build(Example, [1, 2], "train")
    with pytest.raises(InputError, match=r"^params\.yaml: `train` must be a mapping of parameters; got None$"):
        build(Example, None, "train")


def test_wrong_type_names_the_dotted_parameter_and_value():
    with pytest.raises(InputError) as raised:
        build(Example, with_(steps="300"), "train")
    assert str(raised.value) == "params.yaml: train.steps='300' must be an integer"


def test_range_checks_of_post_init_still_run():
    with pytest.raises(InputError, match=r"^params\.yaml: example\.steps=0 must be >= 1$"):
        build(Example, with_(steps=0), "example")


def test_fixed_fields_come_from_the_caller_not_the_section():
    assert build(Example, without("seed"), "example", seed=7).seed == 7
    with pytest.raises(InputError, match=r"^params\.yaml: example\.seed is not a parameter"):
        build(Example, VALUES, "example", seed=7)


def test_inherited_fields_are_parameters_too():
    assert build(Extended, {**VALUES, "extra": 1}, "x") == Extended(extra=1.0)
    with pytest.raises(InputError, match=r"^params\.yaml: x\.extra is missing \(A field of the subclass\.\)$"):
        build(Extended, VALUES, "x")


# ------------------------------------------------------------------ check_type


def test_bool_is_not_an_int_and_an_int_is_not_a_bool():
    with pytest.raises(InputError, match=r"^params\.yaml: train\.steps=True must be an integer$"):
        check_type(True, int, "train.steps")
    with pytest.raises(InputError, match=r"^params\.yaml: train\.lora=1 must be true or false$"):
        check_type(1, bool, "train.lora")
    with pytest.raises(InputError, match=r"^params\.yaml: train\.lr=False must be a number$"):
        check_type(False, float, "train.lr")
    assert check_type(False, bool, "train.lora") is False


def test_int_accepted_as_float_and_converted_but_not_the_reverse():
    value = check_type(3, float, "train.lr")
    assert value == 3.0 and type(value) is float
    assert type(check_type(2.5, float, "train.lr")) is float
    with pytest.raises(InputError, match=r"^params\.yaml: train\.steps=3\.0 must be an integer$"):
        check_type(3.0, int, "train.steps")


def test_literal_choices():
    hint = Literal["joint", "sequential"]
    assert check_type("sequential", hint, "distill.hld.mode") == "sequential"
    with pytest.raises(
        InputError, match=r"^params\.yaml: distill\.hld\.mode='parallel' must be one of joint, sequential$"
    ):
        check_type("parallel", hint, "distill.hld.mode")
    with pytest.raises(InputError, match=r"^params\.yaml: x=True must be 1$"):
        check_type(True, Literal[1], "x")  # True == 1, but a bool is not the integer choice
    with pytest.raises(InputError, match=r"^params\.yaml: x=1 must be one of 1, 2$"):
        check_type(1, Literal["1", "2"], "x")


def test_literal_or_int():
    hint = Literal["auto"] | int
    assert check_type("auto", hint, "probe.layer") == "auto" and check_type(-1, hint, "probe.layer") == -1
    for bad in ("best", True, 1.5, None):
        with pytest.raises(InputError, match=rf"^params\.yaml: probe\.layer={bad!r} must be auto or an integer$"):
            check_type(bad, hint, "probe.layer")


def test_list_of_ints():
    hint = Literal["all"] | list[int]
    assert check_type([0, -1], hint, "extract.layers") == [0, -1] and check_type("all", hint, "extract.layers") == "all"
    for bad in ([], [1, "2"], [True], (0, 1), "first", 3):
        with pytest.raises(InputError) as raised:
            check_type(bad, hint, "extract.layers")
        assert str(raised.value) == f"params.yaml: extract.layers={bad!r} must be all or a non-empty list of integers"


def test_optional():
    assert check_type(None, int | None, "x") is None and check_type(4, int | None, "x") == 4
    assert check_type(None, str | None, "teacher.revision") is None
    with pytest.raises(InputError, match=r"^params\.yaml: teacher\.revision=3 must be a string or null$"):
        check_type(3, str | None, "teacher.revision")
    with pytest.raises(InputError, match=r"^params\.yaml: x='a' must be an integer or null$"):
        check_type("a", int | None, "x")
    with pytest.raises(InputError, match=r"^params\.yaml: x=None must be an integer$"):
        check_type(None, int, "x")


def test_yaml_1_1_reads_exponents_without_a_dot_as_text():
    l2 = yaml.safe_load("l2: 1e-3")["l2"]
    assert l2 == "1e-3"  # the reason for the hint
    with pytest.raises(InputError) as raised:
        check_type(l2, float, "probe.l2")
    assert (
        str(raised.value) == "params.yaml: probe.l2='1e-3' must be a number (YAML 1.1 reads 1e-3 as text: write 1.0e-3)"
    )
    with pytest.raises(InputError, match=r"\(YAML 1\.1 reads 1e-3 as text: write 1\.0e-3\)$"):
        check_type("2e-5", float | None, "x")  # also where a number is one of the choices
    assert check_type(yaml.safe_load("l2: 1.0e-3")["l2"], float, "probe.l2") == 1e-3
    with pytest.raises(InputError, match=r"^params\.yaml: probe\.l2='small' must be a number$"):
        check_type("small", float, "probe.l2")  # text that is no number: no hint
    with pytest.raises(InputError, match=r"^params\.yaml: train\.steps='300' must be an integer$"):
        check_type("300", int, "train.steps")  # an integer field: no hint about floats


def test_mappings():
    assert check_type({"a": 1}, dict, "x") == {"a": 1} and check_type({}, dict[str, int], "x") == {}
    with pytest.raises(InputError, match=r"^params\.yaml: x=\[\] must be a mapping$"):
        check_type([], dict[str, int], "x")


# ------------------------------------------------------------------ describe


@pytest.mark.parametrize(
    ("hint", "words"),
    [
        (int, "an integer"),
        (float, "a number"),
        (bool, "true or false"),
        (str, "a string"),
        (type(None), "null"),
        (dict, "a mapping"),
        (dict[str, int], "a mapping"),
        (int | None, "an integer or null"),
        (str | None, "a string or null"),
        (Literal["auto"], "auto"),
        (Literal["error", "skip"], "one of error, skip"),
        (Literal["auto"] | int, "auto or an integer"),
        (Literal["teacher", "probe"] | None, "one of teacher, probe or null"),
        (list[int], "a non-empty list of integers"),
        (list[float], "a non-empty list of numbers"),
        (list[str], "a non-empty list of strings"),
        (Literal["all"] | list[int], "all or a non-empty list of integers"),
    ],
)
def test_describe(hint, words):
    assert describe(hint) == words


# ------------------------------------------------------------------ field docs and the --help epilog


def test_field_docs_are_the_literals_under_fields_with_whitespace_collapsed():
    docs = field_docs(Example)
    assert docs["steps"] == "Optimiser steps."
    assert docs["lr"] == "Peak learning rate, over two lines."
    assert "undocumented" not in docs
    assert list(docs) == ["steps", "lr", "mode", "layers", "device_map", "lora", "seed"]


def test_field_docs_include_the_base_classes():
    docs = field_docs(Extended)
    assert docs["extra"] == "A field of the subclass." and docs["steps"] == "Optimiser steps."


def test_field_docs_of_a_class_without_source():
    assert field_docs(dataclasses.make_dataclass("Made", [("a", int)])) == {}


def test_parameter_lines_and_help():
    sections = [SEED, Section("train", Example, "arms that train")]
    lines = parameter_lines(sections)
    assert lines[0] == ("seed", "an integer", field_docs(SeedConfig)["seed"])
    assert lines[1:4] == [
        ("train.steps", "an integer", "Optimiser steps."),
        ("train.lr", "a number", "Peak learning rate, over two lines."),
        ("train.mode", "one of joint, sequential", "joint | sequential."),
    ]
    names = [name for name, _, _ in lines]
    assert "train.undocumented" not in names  # no documentation: not listed
    assert "train.seed" not in names  # NOT_A_PARAM: the stage sets it, params.yaml has no train.seed
    assert names[-1] == "train.lora"
    text = parameter_help(sections)
    assert text.startswith("Parameters read from params.yaml:\n\n(train: arms that train)\n\n")
    assert "train.lr (a number): Peak learning rate, over two lines." in text.split("\n\n")
    assert parameter_help([]) == "Reads no parameters."


def test_dotted():
    assert dotted("", "seed") == "seed" and dotted("distill.kd", "alpha") == "distill.kd.alpha"


# ------------------------------------------------------------------ the seed


def test_read_seed():
    assert read_seed({"seed": 3, "train": {"steps": 1}}) == 3
    assert read_seed({"seed": 0}) == 0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, r"^params\.yaml: seed is missing \(One seed for data splits, probe folds and student training"),
        ({"seed": -1}, r"^params\.yaml: seed=-1 must be an integer >= 0$"),
        ({"seed": "0"}, r"^params\.yaml: seed='0' must be an integer$"),
        ({"seed": True}, r"^params\.yaml: seed=True must be an integer$"),
        ({"seed": 1.0}, r"^params\.yaml: seed=1\.0 must be an integer$"),
        ({"seed": None}, r"^params\.yaml: seed=None must be an integer$"),
    ],
)
def test_read_seed_errors(params, message):
    with pytest.raises(InputError, match=message):
        read_seed(params)


def test_every_message_is_one_line():
    attempts = [
        lambda: build(Example, with_(layers="first"), "extract"),
        lambda: build(Example, {**VALUES, "x": 1}, "extract"),
        lambda: build(Example, without("lr"), "extract"),
        lambda: check_type("1e-3", float, "probe.l2"),
        lambda: read_seed({"seed": -2}),
    ]
    for attempt in attempts:
        with pytest.raises(InputError) as raised:
            attempt()
        assert "\n" not in str(raised.value) and str(raised.value).startswith("params.yaml: ")
