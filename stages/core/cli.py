"""What every stage command shares: the `--params-file` option and the one-line error exit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ParamsFile = Annotated[Path, typer.Option("--params-file", help="Parameters file (params.yaml of the project).")]
DEFAULT_PARAMS = Path("params.yaml")
