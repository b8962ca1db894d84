"""Pack the pre-training study's corpus: documents from the builtin world, local files under data/raw/ or a hub
dataset (streamed), tokenised with the teacher's tokenizer into fixed-length train and held-out val sequences."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from stages.core.cli import DEFAULT_PARAMS, ParamsFile
from stages.core.errors import InputError, exits_cleanly
from stages.core.params import load_params
from stages.pretraining.setup import CORPUS_PARAMS, read_corpus_setup

__all__ = ["PARAMS", "main"]
PARAMS = CORPUS_PARAMS
log = logging.getLogger(__name__)


@exits_cleanly
def main(
    raw: Annotated[Path, typer.Option(help="The local data folder (data/raw): local sources must live under it.")],
    teacher: Annotated[Path, typer.Option(help="The teacher's model folder (data/models/teacher): its tokenizer.")],
    out: Annotated[Path, typer.Option(help="Corpus folder to write (data/pretrain/corpus, replaced).")],
    params_file: ParamsFile = DEFAULT_PARAMS,
) -> None:
    """Pack the corpus into train and val sequences of the teacher's tokens."""
    config, builtin = read_corpus_setup(load_params("corpus", params_file))
    if builtin is None and not config.source.startswith("hub:"):
        source = Path(config.source)
        if not source.exists():
            raise InputError(f"params.yaml: pretrain.corpus.source={config.source}: no such file or folder")
        if not source.resolve().is_relative_to(raw.resolve()):
            log.warning("%s is outside %s: `dvc repro` will not notice changes to it", source, raw)
    from stages.pretraining.corpus import run

    run(config, builtin, teacher, out)
