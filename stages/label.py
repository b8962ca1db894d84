"""Write probe labels and teacher-output labels for `labeled` + `transfer`; measure their quality on transfer.

Probe labels come from the probe stage's probabilities at the layer `probe.layer` picks (nothing is
refitted): out-of-fold for labeled examples, the all-labeled refit for transfer. Teacher labels are the
softmax of the teacher's option-letter logits over each question's options; an encoder teacher has none.
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
    prepared: Annotated[Path, typer.Option(help="Folder of the prepared splits (labeled and transfer are read).")],
    hidden: Annotated[Path, typer.Option(help="Folder of the hidden-state stores (labeled and transfer).")],
    probe: Annotated[Path, typer.Option(help="The probe stage's output folder.")],
    out: Annotated[Path, typer.Option(help="Folder for probe.parquet, teacher.parquet, quality.json.")],
    params_file: ParamsFile = DEFAULT_PARAMS,
) -> None:
    """Write probe labels and teacher-output labels; measure their quality."""
    config = read_label_config(load_params("label", params_file))
    run(config, LabelPaths(prepared=prepared, hidden=hidden, probe=probe, out=out))
