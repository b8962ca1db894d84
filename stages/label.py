"""Write soft labels for `labeled` + `transfer` from the probe, the teacher's letters and its cloze readout; measure
their quality on transfer; report every readout of the teacher and the probe on every split.

Probe labels come from the probe stage's probabilities at the layer `probe.layer` picks (nothing is
refitted): out-of-fold for labeled examples, the all-labeled refit for transfer. Teacher labels are the
softmax of the teacher's option-letter logits (temperature 1) or of its cloze log-likelihoods (temperature fitted
on val); an encoder teacher has neither, and `extract.cloze: false` leaves no cloze readout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.core.cli import DEFAULT_PARAMS, ParamsFile
from stages.core.errors import exits_cleanly
from stages.core.params import load_params
from stages.probing.labeling import PARAMS, LabelPaths, read_label_config, run

__all__ = ["PARAMS", "main"]


@exits_cleanly
def main(
    prepared: Annotated[Path, typer.Option(help="Folder of the prepared splits (all four are read).")],
    hidden: Annotated[Path, typer.Option(help="Folder of the hidden-state stores (all four).")],
    probe: Annotated[Path, typer.Option(help="The probe stage's output folder.")],
    out: Annotated[
        Path,
        typer.Option(help="Folder for {probe,teacher,cloze}.parquet, quality.json, readouts.json, test_predictions."),
    ],
    params_file: ParamsFile = DEFAULT_PARAMS,
) -> None:
    """Write probe, teacher-letter and teacher-cloze labels; their quality; every readout on every split."""
    config = read_label_config(load_params("label", params_file))
    run(config, LabelPaths(prepared=prepared, hidden=hidden, probe=probe, out=out))
