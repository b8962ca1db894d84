"""Fit a probe per teacher layer with K-fold cross-fitting on `labeled`; per-layer metrics and plots.

Every (fold, layer) problem of a layer chunk is solved at once (stages/probing/fit.py); every split is
predicted (out-of-fold for `labeled`) and calibrated on `val`. `probe.layer` is not read here: choosing
another layer reruns `label` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.core.cli import DEFAULT_PARAMS, ParamsFile
from stages.core.errors import exits_cleanly
from stages.core.params import load_params
from stages.probing.per_layer import PARAMS, ProbePaths, read_probe_config, run

__all__ = ["PARAMS", "main"]


@exits_cleanly
def main(
    prepared: Annotated[Path, typer.Option(help="Folder of the prepared {labeled,transfer,val,test}.parquet.")],
    hidden: Annotated[Path, typer.Option(help="Folder of the hidden-state stores <split>.zarr.")],
    out: Annotated[Path, typer.Option(help="Output folder (data/probe, replaced atomically).")],
    params_file: ParamsFile = DEFAULT_PARAMS,
) -> None:
    """Fit a probe per layer with cross-fitting; per-layer metrics and plots."""
    config = read_probe_config(load_params("probe", params_file))
    run(config, ProbePaths(prepared=prepared, hidden=hidden, out=out))
