"""Pre-train one student arm from scratch on the study's corpus: nll (next-token loss), kd (plus forward KL to the
teacher's cached top-k), hldc (kd plus the hidden-layer hint term) or hldf (a hint phase, then kd)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from stages.core.cli import DEFAULT_PARAMS, ParamsFile
from stages.core.errors import exits_cleanly
from stages.core.params import load_params
from stages.pretraining.setup import ARM_PARAMS, read_arm_setup

__all__ = ["PARAMS", "main"]
PARAMS = ARM_PARAMS
log = logging.getLogger(__name__)


@exits_cleanly
def main(
    arm: Annotated[str, typer.Argument(help="Arm: nll, kd, hldc or hldf.")],
    corpus: Annotated[Path, typer.Option(help="The packed corpus folder (data/pretrain/corpus).")],
    signal: Annotated[Path, typer.Option(help="The teacher signal store (data/pretrain/teacher_signal.zarr).")],
    teacher: Annotated[Path, typer.Option(help="The teacher's model folder: its tokenizer, and itself when online.")],
    out: Annotated[Path, typer.Option(help="The arm's folder (data/pretrain/students/<arm>, replaced).")],
    params_file: ParamsFile = DEFAULT_PARAMS,
) -> None:
    """Train one arm of the pre-training study; write its student, FLOPs and curves."""
    setup = read_arm_setup(arm, load_params(f"pretrain@{arm}", params_file))
    from stages.pretraining.run import run_arm  # torch, transformers, accelerate: after the params are checked

    summary = run_arm(setup, corpus, signal, teacher, out)
    log.info("%s: %s", arm, json.dumps(summary))
