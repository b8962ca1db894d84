"""Train one student arm (gold, logit_kd, probe_kd, hld, or any arm defined in `distill.arms`).

Every arm shares the optimiser, schedule, batch stream, step budget and seed; only the loss terms differ
(`distill.arms.<arm>`: which soft labels to distil from, whether to add the HLD term). Writes the arm's
folder: `model/` (save_pretrained, with tokenizer; `hld_projection.safetensors` beside it for HLD arms,
unused at inference), `metrics.json` (letter metrics on val and test, cloze accuracy on test),
`test_predictions.parquet` (the option each readout picks per test question), `live/` (DVCLive learning curves),
`calibration.csv` and `confusion.csv`, all renamed into place together when training finished.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from stages.core.cli import DEFAULT_PARAMS, ParamsFile
from stages.core.errors import exits_cleanly
from stages.core.params import load_params
from stages.student.config import PARAMS, TrainPaths, read_train_setup

__all__ = ["PARAMS", "main"]
log = logging.getLogger(__name__)


@exits_cleanly
def main(
    arm: Annotated[str, typer.Argument(help="Arm name, a key of distill.arms (gold, logit_kd, probe_kd, ...).")],
    prepared: Annotated[Path, typer.Option(help="Folder of the prepared {labeled,transfer,val,test}.parquet.")],
    student: Annotated[Path, typer.Option(help="The student's model folder (data/models/student).")],
    out: Annotated[Path, typer.Option(help="The arm's output folder (replaced when training finished).")],
    soft_labels: Annotated[
        Path | None, typer.Option(help="Label parquet to distil from (arms with soft_labels).")
    ] = None,
    hidden: Annotated[
        list[Path] | None, typer.Option(help="Teacher stores of labeled then transfer (HLD arms; give twice).")
    ] = None,
    params_file: ParamsFile = DEFAULT_PARAMS,
) -> None:
    """Train one student arm on the prepared splits; write its folder."""
    setup = read_train_setup(arm, load_params(f"train@{arm}", params_file))
    from stages.student.run import run_arm  # torch, transformers, accelerate: after the params are checked

    paths = TrainPaths(prepared, student, out, soft_labels, tuple(hidden or ()))
    metrics = run_arm(setup, paths)
    log.info("%s: %s", arm, json.dumps(metrics))
