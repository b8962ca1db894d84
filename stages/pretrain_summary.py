"""Collect the pre-training study's arms into one flat metrics file (`<arm>_val_logppl`, `<arm>_downstream_acc`
with intervals, `<arm>_train_flops`, ...) for `dvc metrics show` and `dvc metrics diff`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from stages.core.config import Section
from stages.core.errors import exits_cleanly
from stages.pretraining.summary import summarize

__all__ = ["PARAMS", "main"]
PARAMS: list[Section] = []  # reads no params: only the arms' evaluations
log = logging.getLogger(__name__)


@exits_cleanly
def main(
    evaluations: Annotated[list[Path], typer.Argument(help="Each arm's evaluation (data/pretrain/eval/<arm>.json).")],
    out: Annotated[Path, typer.Option(help="The summary file (data/pretrain/summary/metrics.json, replaced).")],
) -> None:
    """Every arm's log-perplexity, downstream accuracy and training FLOPs, in one flat file."""
    metrics = summarize(list(evaluations), out)
    log.info("%s", json.dumps(metrics, indent=1))
