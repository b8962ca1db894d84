"""`python -m stages`: the stage list, each stage's --help with the parameters it reads, the bare-python message."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stages.__main__ import STAGES, build_app
from stages.core.config import parameter_lines

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
DVC_STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def invoke(requested: str | None, *args: str):
    return CliRunner().invoke(build_app(requested), list(args))


def stage_help(name: str) -> str:
    done = invoke(name, name, "--help")
    assert done.exit_code == 0, done.output
    return " ".join(done.stdout.split())  # rich wraps the epilog to the terminal width


def instances(name: str) -> dict[str, list[str]]:
    """dvc.yaml's params of stage `name`, per foreach instance (`""` for a plain stage), templates resolved."""
    entry = DVC_STAGES[name]
    if "foreach" not in entry:
        return {"": entry.get("params", [])}
    items = entry["foreach"]
    contexts = (
        {key: {"key": key, "item": item} for key, item in items.items()}
        if isinstance(items, dict)
        else {item: {"item": item} for item in items}
    )

    def resolve(template: str, context: dict) -> str:
        def value(match: re.Match) -> str:
            found = context
            for part in match.group(1).split("."):
                found = found[part]
            return str(found)

        return re.sub(r"\$\{([^}]+)\}", value, template)

    return {
        instance: [resolve(param, context) for param in entry["do"].get("params", [])]
        for instance, context in contexts.items()
    }


def leaves(path: str) -> set[str]:
    """Every leaf parameter of params.yaml at or under dotted `path`."""
    node = PARAMS
    for part in path.split("."):
        node = node[part]
    if isinstance(node, dict) and node:
        return {leaf for key in node for leaf in leaves(f"{path}.{key}")}
    return {path}


def listed(name: str, instance: str) -> set[str]:
    """The parameters the stage's --help lists, its placeholder (<role>, <arm>) replaced by `instance`."""
    module = importlib.import_module(STAGES[name][0])
    return {re.sub(r"<[a-z]+>", instance, line[0]) for line in parameter_lines(module.PARAMS)}


# ------------------------------------------------------------------ the stage list


def test_help_lists_every_stage():
    done = invoke(None, "--help")
    assert done.exit_code == 0, done.output
    for name in STAGES:
        assert name in done.stdout
    assert "Usage" in done.stdout


@pytest.mark.parametrize("name", list(STAGES))
def test_each_stage_has_help(name):
    done = invoke(name, name, "--help")
    assert done.exit_code == 0, f"{name}: {done.output}"
    assert "Usage" in done.stdout and f"probekd {name}" in done.stdout


def test_unknown_stage_fails():
    done = invoke("no-such-stage", "no-such-stage")
    assert done.exit_code == 2 and "No such command 'no-such-stage'" in done.stderr


def test_python_without_the_dependencies_says_to_activate_the_environment():
    # -S: no site-packages, as when dvc finds a system `python` on PATH instead of the environment's.
    done = subprocess.run([sys.executable, "-S", "-m", "stages", "prepare"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode != 0
    assert "cannot import typer" in done.stderr and ".venv/bin/activate" in done.stderr


# ------------------------------------------------------------------ the parameters in each stage's --help


NO_PARAMS = ("summarize", "pretrain_summary")  # stages that read only other stages' outputs


@pytest.mark.parametrize("name", [name for name in STAGES if name not in NO_PARAMS])
def test_help_lists_each_parameter_with_its_documentation(name):
    text = stage_help(name)
    assert "Parameters read from params.yaml:" in text
    module = importlib.import_module(STAGES[name][0])
    lines = parameter_lines(module.PARAMS)
    assert lines
    for dotted_name, kind, doc in lines:
        assert doc, f"{name}: {dotted_name} has no documentation"
        assert f"{dotted_name} ({kind}): {doc}" in text, f"{name} --help lacks {dotted_name}"
    for section in module.PARAMS:
        if section.note:
            assert f"({section.path or 'top level'}: {section.note})" in text


def test_train_help_documents_train_steps():
    text = stage_help("train")
    assert "train.steps (an integer): Optimiser steps (the budget every arm gets)." in text
    assert "distill.kd.alpha (a number): Weight of CE(gold) on labeled rows;" in text
    assert "(distill.hld: arms with hld: true)" in text


@pytest.mark.parametrize("name", NO_PARAMS)
def test_summarize_help_says_it_reads_no_parameters(name):
    text = stage_help(name)
    assert "Reads no parameters." in text and "params.yaml:" not in text


@pytest.mark.parametrize("name", list(STAGES))
def test_help_lists_every_parameter_dvc_yaml_gives_the_stage(name):
    for instance, params in instances(name).items():
        read = set().union(*(leaves(param) for param in params))
        assert read <= listed(name, instance), (
            f"{name}@{instance}: --help lacks {sorted(read - listed(name, instance))}"
        )


@pytest.mark.parametrize("name", list(STAGES))
def test_help_lists_no_parameter_dvc_yaml_does_not_give_the_stage(name):
    groups = instances(name)
    read = set().union(*(leaves(param) for params in groups.values() for param in params))
    extra = set().union(*(listed(name, instance) for instance in groups)) - read
    assert not extra, f"{name} --help lists parameters it does not read: {sorted(extra)}"
