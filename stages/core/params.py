"""Read a stage's parameters from params.yaml, and only the ones dvc.yaml says it reads.

Inside a DVC repo we ask `dvc.api.params_show(stages=...)`, which returns exactly the params listed for
that stage: a stage cannot quietly read a param that is not in its dvc.yaml entry (which would break
caching). Outside a DVC repo (a user calling the CLI by hand, unit tests) we read the YAML file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stages.core.errors import InputError


def load_params(stage: str, params_file: str | Path = "params.yaml") -> dict[str, Any]:
    """Params for `stage` (a dvc.yaml stage name such as `probe` or `train@gold`), as a nested dict."""
    params_path = Path(params_file)
    if not params_path.exists():
        raise InputError(f"{params_path}: parameters file not found (run from the project root)")
    if Path("dvc.yaml").exists() and params_path.resolve().parent == Path.cwd().resolve():
        import dvc.api

        try:
            return dict(dvc.api.params_show(stages=stage, deps=False))
        except Exception as error:  # dvc raises its own types for unknown stages; keep the message
            if "stage" not in str(error).lower():
                raise
    return read_yaml(params_path)


def read_yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle) or {}
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    return loaded


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    """A params section, with a clear error when dvc.yaml/params.yaml lack it."""
    value = params.get(name)
    if not isinstance(value, dict):
        raise InputError(f"params.yaml: section `{name}` is missing or not a mapping")
    return value
