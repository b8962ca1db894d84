"""Collect every arm, every teacher readout and the probe on test into one flat metrics file, with bootstrap
intervals, the performance gap each arm recovers and paired differences (`dvc metrics show` / `dvc exp show` read it
as a table), and a bar chart of test accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.core.config import Section
from stages.core.errors import exits_cleanly
from stages.report.collect import SummaryPaths, run

__all__ = ["PARAMS", "main"]
PARAMS: list[Section] = []  # reads no params: only other stages' outputs


@exits_cleanly
def main(
    arms: Annotated[
        list[Path], typer.Argument(help="Each arm's folder (data/students/<arm>: metrics.json, test predictions).")
    ],
    labels: Annotated[Path, typer.Option(help="The label stage's folder (test predictions, readouts, quality).")],
    out: Annotated[Path, typer.Option(help="Folder for metrics.json and accuracy.csv (replaced).")],
) -> None:
    """Every arm and teacher readout on test with intervals, PGR and paired differences, in one file."""
    run(SummaryPaths(arms=list(arms), labels=labels, out=out))
