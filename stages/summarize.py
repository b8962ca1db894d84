"""Collect every arm's test accuracy, the teacher's and the probe's, and the label quality into one flat
metrics file (`dvc metrics show` / `dvc exp show` read it as a table) and a bar chart of test accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.core.config import Section
from stages.core.errors import exits_cleanly
from stages.report.summary import SummaryPaths, run

__all__ = ["PARAMS", "main"]
PARAMS: list[Section] = []  # reads no params: only other stages' metrics


@exits_cleanly
def main(
    arms: Annotated[list[Path], typer.Argument(help="Each arm's metrics.json (data/students/<arm>/metrics.json).")],
    probe: Annotated[Path, typer.Option(help="The probe stage's metrics.json.")],
    labels: Annotated[Path, typer.Option(help="The label stage's quality.json.")],
    out: Annotated[Path, typer.Option(help="Folder for metrics.json and accuracy.csv (replaced).")],
) -> None:
    """Collect every arm's test accuracy, the teacher's and the probe's, and the label quality into one file."""
    run(SummaryPaths(arms=list(arms), probe=probe, labels=labels, out=out))
