"""Resolve the teacher or student (hub id, local path, or pretrain the builtin).

Reads params `seed`, `builtin.task`, `builtin.<role>` and `<role>`; writes `data/models/<role>` atomically:
`model_ref.json` only for a hub id (pinned to its commit) or a local folder (pinned to a sha256 of its files),
or, for `builtin`, also `weights/` (safetensors model + tokenizer, save_pretrained) pretrained here. Every later
stage loads the result with `stages.hf_models.load_model(data/models/<role>)`, the same path for all three.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from stages.atomic import atomic_path
from stages.errors import InputError, exits_cleanly
from stages.hf_models import BUILTIN_WEIGHTS, ModelRef, hash_folder, resolve
from stages.params import load_params, section

log = logging.getLogger(__name__)
ROLES = ("teacher", "student")


@dataclass(frozen=True)
class ModelSourceConfig:
    """The `teacher` or `student` section of params.yaml."""

    role: str
    model: str = "builtin"
    """Hugging Face hub id, local folder saved with save_pretrained, or `builtin`."""
    revision: str | None = None
    """Hub branch/tag/commit; the resolved commit is recorded in model_ref.json."""
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise InputError(f"{self.role}.model must be a hub id, a local folder or builtin; got {self.model!r}")
        if self.revision is not None and not isinstance(self.revision, str):
            raise InputError(f"{self.role}.revision must be a branch, tag, commit or null; got {self.revision!r}")
        if not isinstance(self.trust_remote_code, bool):
            raise InputError(f"{self.role}.trust_remote_code must be true or false; got {self.trust_remote_code!r}")
        if self.model != "builtin" and looks_like_path(self.model) and not Path(self.model).expanduser().exists():
            raise InputError(
                f"{self.role}.model={self.model}: local folder not found; give a folder saved with save_pretrained, "
                "a hub id (org/name) or builtin"
            )

    @classmethod
    def from_params(cls, role: str, params: dict) -> ModelSourceConfig:
        unknown = set(params) - {"model", "revision", "trust_remote_code"}
        if unknown:
            raise InputError(f"params.yaml: unknown key(s) in `{role}`: {sorted(unknown)}")
        return cls(role=role, **params)


def looks_like_path(source: str) -> bool:
    """A hub id is `name` or `org/name`; anything else (absolute, ./, ~, deeper, backslash) is meant as a path."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def write_model(config: ModelSourceConfig, builtin: dict, seed: int, out_dir: Path) -> ModelRef:
    """Resolve (or pretrain) the model and write `out_dir` (= data/models/<role>) in one rename."""
    with atomic_path(out_dir, directory=True) as temp:
        temp.mkdir(parents=True, exist_ok=True)
        if config.model == "builtin":
            from stages.builtin_models import BuiltinModelConfig, train_builtin
            from stages.builtin_world import TaskConfig

            task = TaskConfig.from_params(section(builtin, "task"))
            model_config = BuiltinModelConfig.from_params(config.role, section(builtin, config.role))
            train_builtin(model_config, task, seed, config.role, temp / BUILTIN_WEIGHTS)
            weights = temp / BUILTIN_WEIGHTS
            ref = ModelRef(BUILTIN_WEIGHTS, hash_folder(weights), "causal_lm", builtin=True)
        else:
            ref = resolve(config.model, revision=config.revision, trust_remote_code=config.trust_remote_code)
        ref.save(temp)
    log.info("wrote %s: %s (%s)", out_dir, ref.source, ref.revision)
    return ref


@exits_cleanly
def main(
    role: Annotated[str, typer.Argument(help="teacher or student.")],
    params_file: Annotated[Path, typer.Option(help="Parameters file (reads seed, builtin, <role>).")] = Path(
        "params.yaml"
    ),
    out_root: Annotated[Path, typer.Option(help="Folder holding <role>/model_ref.json.")] = Path("data/models"),
) -> None:
    """Resolve the teacher or student (hub id, local path, or pretrain the builtin).

    <role>.model: a hub id (pinned to its commit), a local save_pretrained folder (pinned to a sha256 of its
    files) or builtin (a tiny Llama pretrained here on the builtin world, params builtin.task and builtin.<role>).
    """
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    params = load_params(f"models@{role}", params_file)
    config = ModelSourceConfig.from_params(role, section(params, role))
    seed = params.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"params.yaml: seed must be an integer; got {seed!r}")
    builtin = section(params, "builtin") if config.model == "builtin" else {}
    write_model(config, builtin, seed, out_root / role)
