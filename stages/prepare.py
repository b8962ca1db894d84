"""Load a dataset into the canonical schema; write labeled/transfer/val/test parquet splits.

Sources (`data.dataset`): builtin, arc_easy, arc_challenge, mmlu, aqua_rat, or a canonical file or folder
under data/raw/; `data.path` is a local copy of a benchmark in its original format (null: the hub).
Split rule (stages/sources/splits.py): examples are ranked by sha256(seed, id); labeled = the first
data.labeled of the training pool, transfer = its last data.transfer, so a sweep over data.labeled keeps
transfer fixed. Bad rows stop the stage (exit 2, file and line named) unless data.on_invalid is skip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.core.cli import DEFAULT_PARAMS, ParamsFile
from stages.core.errors import exits_cleanly
from stages.core.params import load_params
from stages.sources.preparation import PARAMS, PreparePaths, read_prepare_setup, run

__all__ = ["PARAMS", "main"]


@exits_cleanly
def main(
    raw: Annotated[Path, typer.Option(help="Local-data folder prepare depends on (data.path must lie inside).")],
    out: Annotated[Path, typer.Option(help="Folder for {labeled,transfer,val,test}.parquet (replaced).")],
    params_file: ParamsFile = DEFAULT_PARAMS,
) -> None:
    """Load a dataset into the canonical schema; write labeled/transfer/val/test parquet splits."""
    setup = read_prepare_setup(load_params("prepare", params_file))
    run(setup, PreparePaths(raw=raw, out=out))
