"""Load a dataset into the canonical schema; write labeled/transfer/val/test parquet splits.

Sources (`data.dataset`): builtin, arc_easy, arc_challenge, mmlu, aqua_rat, or a canonical file or folder
under data/raw/; `data.path` is a local copy of a benchmark in its original format (null: the hub).
Split rule (stages/sources/splits.py): examples are ranked by sha256(seed, id); labeled = the first
data.labeled of the training pool, transfer = its last data.transfer, so a sweep over data.labeled keeps
transfer fixed. Bad rows stop the stage (exit 2, file and line named) unless data.on_invalid is skip.
Given the models (--teacher, --student), prompts longer than their positions are handled here, once for every
later stage, as `prompt.on_too_long` says (stages/modeling/fitting.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.core.cli import DEFAULT_PARAMS, ParamsFile
from stages.core.config import Section, build
from stages.core.errors import exits_cleanly
from stages.core.params import load_params, section
from stages.sources.preparation import PARAMS, PreparePaths, read_prepare_setup, run
from stages.sources.prompts import PromptConfig

__all__ = ["PARAMS", "main"]
PARAMS = [*PARAMS, Section("prompt", PromptConfig, "prompt.on_too_long, with --teacher and --student")]


@exits_cleanly
def main(
    raw: Annotated[Path, typer.Option(help="Local-data folder prepare depends on (data.path must lie inside).")],
    out: Annotated[Path, typer.Option(help="Folder for {labeled,transfer,val,test}.parquet (replaced).")],
    teacher: Annotated[
        Path | None, typer.Option(help="The teacher's model folder: prompts must fit its positions.")
    ] = None,
    student: Annotated[
        Path | None, typer.Option(help="The student's model folder: prompts must fit its positions.")
    ] = None,
    params_file: ParamsFile = DEFAULT_PARAMS,
) -> None:
    """Load a dataset into the canonical schema; write labeled/transfer/val/test parquet splits."""
    params = load_params("prepare", params_file)
    setup = read_prepare_setup(params)
    fit = None
    if teacher is not None or student is not None:
        prompt = build(PromptConfig, section(params, "prompt"), "prompt")
        from stages.modeling.fitting import PromptFit, Reader  # transformers: only with models to fit

        roles = [("teacher", teacher), ("student", student)]
        fit = PromptFit(prompt, [Reader.load(role, folder) for role, folder in roles if folder is not None])
    run(setup, PreparePaths(raw=raw, out=out), fit)
