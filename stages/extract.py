"""Cache the teacher's hidden states of every requested layer, at the answer position, into a zarr store.

One forward pass of the frozen teacher per prompt (length-bucketed batches, a stop after the deepest
requested block), with the teacher's option-letter logits when it has an LM head. Resumable after a crash
(`<store>.partial`) and data-parallel under `PROBEKD_LAUNCHER` (accelerate launch / torchrun).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.core.cli import DEFAULT_PARAMS, ParamsFile
from stages.core.errors import exits_cleanly
from stages.core.params import load_params
from stages.sources.schema import prompt_fit, read_split
from stages.store.extract_config import PARAMS, read_extract_setup
from stages.store.extraction import check_device, run

__all__ = ["PARAMS", "main"]


@exits_cleanly
def main(
    split: Annotated[str, typer.Argument(help="Split name (labeled, transfer, val or test): the dvc.yaml stage.")],
    data: Annotated[Path, typer.Option(help="The prepared split's parquet file.")],
    teacher: Annotated[Path, typer.Option(help="The teacher's model folder (data/models/teacher).")],
    out: Annotated[Path, typer.Option(help="The store to write (<split>.zarr, replaced when complete).")],
    shots: Annotated[Path | None, typer.Option(help="The prepared shots.parquet (read with prompt.shots > 0).")] = None,
    params_file: ParamsFile = DEFAULT_PARAMS,
) -> None:
    """Cache the teacher's hidden states of every layer into a zarr store."""
    setup = read_extract_setup(load_params(f"extract@{split}", params_file))
    check_device(setup.extract.device)  # before any input is read: a machine without the device asked for
    out.parent.mkdir(parents=True, exist_ok=True)
    run(setup, read_split(data), teacher, out, fitted=prompt_fit(data), shots=shots)
