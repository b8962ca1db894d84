"""The one contract between params.yaml and a stage: typed dataclass configs, built and checked the same way.

A config is a frozen dataclass that mirrors one params.yaml section; a string literal under a field is its
documentation (shown by `--help` and in the README's parameter reference). `build` rejects unknown keys
(with a suggestion), missing keys and wrong types with one line naming the parameter; range checks live in
each config's `__post_init__`. Every failure is an InputError: the CLI prints it and exits 2.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import textwrap
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from stages.core.errors import InputError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Section:
    """A params.yaml section a stage reads: its dotted path and the config class that mirrors it."""

    path: str
    """Dotted path in params.yaml; empty for top-level keys such as `seed`."""
    config: type
    note: str = ""
    """When the stage reads this section (for sections only some runs need)."""


def dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


NOT_A_PARAM = {"param": False}  # dataclass field metadata: set by the stage (e.g. the global seed), not the section


def build(cls: type[T], values: Any, where: str, **fixed: Any) -> T:
    """`cls` from the params.yaml mapping at `where` (e.g. `train`); `fixed` fields come from elsewhere."""
    if not isinstance(values, Mapping):
        raise InputError(f"params.yaml: `{where}` must be a mapping of parameters; got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in fixed}  # type: ignore[arg-type]
    for key in values:
        if key not in fields:
            raise InputError(
                f"params.yaml: {dotted(where, str(key))} is not a parameter; {suggest(str(key), list(fields), where)}"
            )
    missing = [name for name in fields if name not in values]
    if missing:
        klass: type = cls  # widened: mypy does not see type[T] as Hashable, which functools.cache asks for
        docs = field_docs(klass)
        name = missing[0]
        hint = f" ({docs[name]})" if name in docs else ""
        raise InputError(f"params.yaml: {dotted(where, name)} is missing{hint}")
    hints = typing.get_type_hints(cls)
    checked = {name: check_type(values[name], hints[name], dotted(where, name)) for name in fields}
    return cls(**checked, **fixed)


def suggest(key: str, known: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean {dotted(where, close[0])}?"
    return f"{where or 'the top level'} has: {', '.join(known)}"


def check_type(value: Any, hint: Any, name: str) -> Any:
    """`value` if it has type `hint` (ints accepted as floats, converted); else a clear InputError."""
    if matches(value, hint):
        return float(value) if hint is float else value
    note = ""
    if isinstance(value, str) and accepts(hint, float):
        try:
            float(value)
            note = " (YAML 1.1 reads 1e-3 as text: write 1.0e-3)"
        except ValueError:
            pass
    raise InputError(f"params.yaml: {name}={value!r} must be {describe(hint)}{note}")


def accepts(hint: Any, kind: type) -> bool:
    return hint is kind or any(accepts(arg, kind) for arg in typing.get_args(hint) if is_union(hint))


def is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if is_union(hint):
        return any(matches(value, arg) for arg in typing.get_args(hint))
    if origin is Literal:
        return any(value == choice and type(value) is type(choice) for choice in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and bool(value) and all(matches(x, item) for x in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


def describe(hint: Any) -> str:
    """`int | None` -> `an integer or null`: the words an error message uses for a type."""
    if is_union(hint):
        return " or ".join(describe(arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is Literal:
        choices = [str(choice) for choice in typing.get_args(hint)]
        return choices[0] if len(choices) == 1 else "one of " + ", ".join(choices)
    if typing.get_origin(hint) is list:
        return f"a non-empty list of {describe(typing.get_args(hint)[0]).removeprefix('an ').removeprefix('a ')}s"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    return words.get(hint, "a mapping" if hint is dict or typing.get_origin(hint) is dict else str(hint))


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the string literal written under it in the class body (the field's documentation)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0]
        if not isinstance(body, ast.ClassDef):
            continue
        for field, after in zip(body.body, body.body[1:], strict=False):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[field.target.id] = " ".join(after.value.value.split())
    return docs


def parameter_lines(sections: list[Section]) -> list[tuple[str, str, str]]:
    """(dotted name, type words, documentation) of every parameter in `sections`, in declaration order."""
    lines = []
    for section in sections:
        docs = field_docs(section.config)
        hints = typing.get_type_hints(section.config)
        for field in dataclasses.fields(section.config):
            if field.init and field.name in docs and field.metadata.get("param", True):
                lines.append((dotted(section.path, field.name), describe(hints[field.name]), docs[field.name]))
    return lines


def parameter_help(sections: list[Section]) -> str:
    """The `--help` epilog of a stage: every parameter it reads, with its documentation."""
    if not sections:
        return "Reads no parameters."
    lines = ["Parameters read from params.yaml:"]
    for section in sections:
        if section.note:
            lines.append(f"({section.path or 'top level'}: {section.note})")
    lines += [f"{name} ({kind}): {doc}" for name, kind, doc in parameter_lines(sections)]
    return "\n\n".join(lines)


@dataclasses.dataclass(frozen=True)
class SeedConfig:
    """The top-level `seed`."""

    seed: int = 0
    """One seed for data splits, probe folds and student training (the builtin world and models: builtin.seed)."""

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise InputError(f"params.yaml: seed={self.seed} must be an integer >= 0")


SEED = Section("", SeedConfig)


def read_seed(params: Mapping[str, Any]) -> int:
    """The global `seed`: one check for every stage that reads it."""
    return build(SeedConfig, {key: params[key] for key in ("seed",) if key in params}, "").seed
