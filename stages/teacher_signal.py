"""Cache the teacher's signal over the study's training corpus, once for every arm and seed: its top-k next-token
log-probabilities and ids and one layer's hidden states at every position, in a resumable sharded zarr store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.core.cli import DEFAULT_PARAMS, ParamsFile
from stages.core.errors import exits_cleanly
from stages.core.params import load_params
from stages.pretraining.setup import SIGNAL_PARAMS, read_signal_config

__all__ = ["PARAMS", "main"]
PARAMS = SIGNAL_PARAMS


@exits_cleanly
def main(
    corpus: Annotated[Path, typer.Option(help="The packed corpus folder (data/pretrain/corpus).")],
    teacher: Annotated[Path, typer.Option(help="The teacher's model folder (data/models/teacher).")],
    out: Annotated[Path, typer.Option(help="The store to write (data/pretrain/teacher_signal.zarr, replaced).")],
    params_file: ParamsFile = DEFAULT_PARAMS,
) -> None:
    """Run the teacher once over the training corpus; store top-k log-probs, ids and hidden states."""
    config = read_signal_config(load_params("teacher_signal", params_file))
    from stages.pretraining.corpus import read_corpus
    from stages.pretraining.signal_store import run

    train, _, _ = read_corpus(corpus)
    run(config, train, teacher, out)
