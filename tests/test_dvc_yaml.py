"""DVC hygiene: every stage lists exactly the stages/ modules it imports (transitively) as deps."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from stages.__main__ import STAGES

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "stages"


def imported_modules(path: Path) -> set[str]:
    """stages.* modules imported anywhere in the file (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("stages"))
    return {name for name in found if (PACKAGE / f"{name.removeprefix('stages.')}.py").exists()}


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imported_modules(PACKAGE / f"{name.removeprefix('stages.')}.py"))
    return seen


def code_deps(stage: dict) -> set[str]:
    body = stage.get("do", stage)
    return {dep for dep in body.get("deps", []) if isinstance(dep, str) and dep.startswith("stages/")}


def stage_command(stage: dict) -> str:
    return stage.get("do", stage)["cmd"].split()[3]  # python -m stages <command> ...


PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(PIPELINE))
def test_stage_code_deps_are_exactly_its_imports(name):
    stage = PIPELINE[name]
    command = stage_command(stage)
    expected = closure("stages.__main__") | closure(STAGES[command][0])
    expected_paths = {f"stages/{module.removeprefix('stages.')}.py" for module in expected}
    listed = code_deps(stage)
    assert listed == expected_paths, (
        f"{name}: missing {sorted(expected_paths - listed)}, extra {sorted(listed - expected_paths)}"
    )


def test_every_stage_runs_through_python_m_stages():
    for name, stage in PIPELINE.items():
        assert stage.get("do", stage)["cmd"].startswith("python -m stages "), name
