"""The layout the README's Architecture section promises: thin stage commands on top of library
subpackages that import only from packages above them in the list, so the import graph has no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from stages.__main__ import STAGES

PACKAGE = Path(__file__).resolve().parents[1] / "stages"
LAYERS = ["core", "sources", "modeling", "store", "probing", "student", "pretraining", "report"]  # README order
MAX_MODULE_LINES = 250


def stages_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("stages."))
    return found


def library_modules() -> list[Path]:
    return sorted(path for layer in LAYERS for path in (PACKAGE / layer).glob("*.py"))


def test_top_level_holds_the_entry_point_and_the_stage_commands():
    top = {path.stem for path in PACKAGE.glob("*.py")}
    assert top == {"__init__", "__main__", *STAGES}
    assert {path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name != "__pycache__"} == set(LAYERS)


@pytest.mark.parametrize("path", library_modules(), ids=lambda path: f"{path.parent.name}/{path.name}")
def test_library_imports_only_from_its_own_package_or_those_above(path):
    own = LAYERS.index(path.parent.name)
    allowed = {f"stages.{layer}" for layer in LAYERS[: own + 1]}
    if path.name == "reference.py":  # the README generator script reads the command table, lazily
        allowed.add("stages.__main__")
    for module in stages_imports(path):
        assert any(module == a or module.startswith(a + ".") for a in allowed), f"{path} imports {module}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_module_is_longer_than_the_style_limit(path):
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES


def test_the_import_graph_has_no_cycles():
    """Function-level imports count too: a cycle hidden inside a function is still a cycle."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = "stages." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        graph[name.removesuffix(".__init__")] = {m for m in stages_imports(path) if m != name}
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != "open", "import cycle: " + " -> ".join([*trail, node, nxt])
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
