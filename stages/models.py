"""Resolve the teacher or student (hub id, local folder, or pretrain the builtin); with `--fingerprint`, only
record what a local folder holds, so an in-place edit of its files reruns `models@<role>` (dvc.yaml's
`fingerprint@<role>`, run on every `dvc repro`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.core.cli import DEFAULT_PARAMS, ParamsFile
from stages.core.errors import InputError, exits_cleanly
from stages.core.params import load_params, section
from stages.modeling.resolution import PARAMS, ROLES, read_model_setup, run

__all__ = ["PARAMS", "main"]


@exits_cleanly
def main(
    role: Annotated[str, typer.Argument(help=f"Which model: {' or '.join(ROLES)}.")],
    out: Annotated[Path | None, typer.Option(help="Model folder to write (data/models/<role>, replaced).")] = None,
    fingerprint: Annotated[
        Path | None,
        typer.Option(help="Instead: record the model's content (data/fingerprints/<role>.json)."),
    ] = None,
    params_file: ParamsFile = DEFAULT_PARAMS,
) -> None:
    """Resolve the teacher or student (hub id, local path, or pretrain the builtin)."""
    if (out is None) == (fingerprint is None):
        raise InputError("give exactly one of --out (resolve the model) and --fingerprint (record its content)")
    if fingerprint is not None:
        from stages.modeling.fingerprint import fingerprint as write_fingerprint

        if role not in ROLES:
            raise InputError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
        source = section(load_params(f"fingerprint@{role}", params_file), role).get("model")
        if not isinstance(source, str) or not source.strip():
            raise InputError(f"params.yaml: {role}.model must be a hub id, a local folder or builtin; got {source!r}")
        write_fingerprint(source, fingerprint)
        return
    assert out is not None
    setup = read_model_setup(role, load_params(f"models@{role}", params_file))
    run(setup, out)
