"""Resolve the teacher or student: a hub id (pinned to its commit), a local save_pretrained folder (pinned to a
sha256 of its files) or builtin (a tiny Llama pretrained here on the builtin world)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.core.cli import DEFAULT_PARAMS, ParamsFile
from stages.core.errors import exits_cleanly
from stages.core.params import load_params
from stages.modeling.resolution import PARAMS, ROLES, read_model_setup, run

__all__ = ["PARAMS", "main"]


@exits_cleanly
def main(
    role: Annotated[str, typer.Argument(help=f"Which model: {' or '.join(ROLES)}.")],
    out: Annotated[Path, typer.Option(help="Model folder to write (data/models/<role>, replaced).")],
    params_file: ParamsFile = DEFAULT_PARAMS,
) -> None:
    """Resolve the teacher or student (hub id, local path, or pretrain the builtin)."""
    setup = read_model_setup(role, load_params(f"models@{role}", params_file))
    run(setup, out)
