"""DVC hygiene: every stage lists exactly the stages/ modules it imports (transitively) as code deps, and
every path its command names is one of its deps or outs, so a change reruns what it must and nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from stages.__main__ import STAGES

ROOT = Path(__file__).resolve().parents[1]


def module_file(module: str) -> Path | None:
    """stages.a.b -> stages/a/b.py (or stages/a/b/__init__.py); None for names that are not modules."""
    base = ROOT / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """stages.* modules imported anywhere in the file (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("stages"))
    return {name for name in found if module_file(name) is not None}


def with_parents(module: str) -> set[str]:
    """Importing stages.a.b runs stages/__init__.py and stages/a/__init__.py first."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def closure(module: str) -> set[Path]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(with_parents(name) - seen)
            todo.extend(imported_modules(module_file(name)))
    return {module_file(name).relative_to(ROOT) for name in seen}


def body(stage: dict) -> dict:
    return stage.get("do", stage)


def code_deps(stage: dict) -> set[Path]:
    return {Path(dep) for dep in body(stage).get("deps", []) if isinstance(dep, str) and dep.startswith("stages/")}


def stage_command(stage: dict) -> str:
    return body(stage)["cmd"].split()[3]  # python -m stages <command> ...


PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def expanded(name: str, stage: dict) -> list[dict]:
    """Each concrete stage of a foreach, with ${item}, ${key} and ${item.x} substituted."""
    if "foreach" not in stage:
        return [stage]
    items = stage["foreach"]
    pairs = items.items() if isinstance(items, dict) else ((item, item) for item in items)
    text = yaml.safe_dump(stage["do"])
    concrete = []
    for key, item in pairs:
        filled = text.replace("${key}", str(key))
        if isinstance(item, dict):
            for field, value in item.items():
                filled = filled.replace(f"${{item.{field}}}", str(value))
        else:
            filled = filled.replace("${item}", str(item))
        concrete.append(yaml.safe_load(filled))
    return concrete


def declared_paths(stage: dict) -> set[str]:
    paths = set()
    for kind in ("deps", "outs", "metrics", "plots"):
        for entry in stage.get(kind, []):
            paths.add(entry if isinstance(entry, str) else next(iter(entry)))
    return paths


@pytest.mark.parametrize("name", sorted(PIPELINE))
def test_stage_code_deps_are_exactly_its_imports(name):
    stage = PIPELINE[name]
    expected = closure("stages.__main__") | closure(STAGES[stage_command(stage)][0])
    listed = code_deps(stage)
    assert listed == expected, (
        f"{name}: missing {sorted(map(str, expected - listed))}, extra {sorted(map(str, listed - expected))}"
    )


@pytest.mark.parametrize("name", sorted(PIPELINE))
def test_every_path_in_a_command_is_a_dep_or_an_out(name):
    """A path the command reads or writes that DVC does not know about would make caching lie. A folder
    option (e.g. --hidden data/hidden) counts when the stage lists the files it reads inside it."""
    for stage in expanded(name, PIPELINE[name]):
        declared = declared_paths(stage)
        words = [word for word in stage["cmd"].split() if "/" in word and not word.startswith("-")]
        assert words, f"{name}: its command names no paths; dvc.yaml must own every path"
        for word in words:
            inside = [path for path in declared if path.startswith(word.rstrip("/") + "/")]
            assert word in declared or inside, f"{name}: `{word}` in its cmd is neither a dep nor an out"


def test_every_stage_runs_through_python_m_stages():
    for name, stage in PIPELINE.items():
        assert body(stage)["cmd"].startswith("python -m stages "), name
