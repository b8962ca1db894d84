"""`models@<role>`: resolve the teacher or student (hub id, local folder, or pretrain the builtin).

Writes `data/models/<role>` atomically: `model_ref.json` only for a hub id (pinned to its commit) or a local
folder (pinned to a sha256 of its files), or, for `builtin`, also `weights/` (safetensors model + tokenizer,
save_pretrained) pretrained here. Every later stage loads the result with
`stages.modeling.loading.load_model(data/models/<role>)`, the same path for all three.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.atomic import atomic_path
from stages.core.config import Section, build
from stages.core.errors import InputError
from stages.core.params import section
from stages.modeling.builtin import BuiltinModelConfig
from stages.modeling.loading import BUILTIN_WEIGHTS, ModelRef, hash_folder, resolve
from stages.sources.builtin_world import BUILTIN_SEED, TaskConfig, read_builtin_seed

log = logging.getLogger(__name__)
ROLES = ("teacher", "student")


@dataclass(frozen=True)
class ModelSourceConfig:
    """The `teacher` or `student` section of params.yaml."""

    model: str = "builtin"
    """Hugging Face hub id, local folder saved with save_pretrained, or builtin."""
    revision: str | None = None
    """Hub branch/tag/commit; the resolved commit is recorded in model_ref.json."""
    trust_remote_code: bool = False
    """Let transformers run the checkpoint's own Python code (off unless you trust it)."""

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise InputError("params.yaml: <role>.model is empty; give a hub id, a local folder or builtin")


@dataclass(frozen=True)
class ModelSetup:
    """Everything `models@<role>` reads from params.yaml, checked."""

    role: str
    source: ModelSourceConfig
    builtin_seed: int | None
    """builtin.seed, only for a builtin model (the pipeline's `seed` never changes a model)."""
    task: TaskConfig | None
    """builtin.task, only for a builtin model."""
    builtin: BuiltinModelConfig | None
    """builtin.<role>, only for a builtin model."""


PARAMS = [
    Section("<role>", ModelSourceConfig),
    BUILTIN_SEED,
    Section("builtin.task", TaskConfig, "<role>.model: builtin"),
    Section("builtin.<role>", BuiltinModelConfig, "<role>.model: builtin"),
]


def looks_like_path(source: str) -> bool:
    """A hub id is `name` or `org/name`; anything else (absolute, ./, ~, deeper, backslash) is meant as a path."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def read_model_setup(role: str, params: dict[str, Any]) -> ModelSetup:
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    try:
        return read_role_setup(role, params)
    except InputError as error:  # the configs serve both roles and say `<role>`: name the section that is wrong
        raise InputError(str(error).replace("<role>", role)) from None


def read_role_setup(role: str, params: dict[str, Any]) -> ModelSetup:
    source = build(ModelSourceConfig, section(params, role), role)
    if source.model != "builtin" and looks_like_path(source.model) and not Path(source.model).expanduser().exists():
        raise InputError(
            f"params.yaml: {role}.model={source.model}: local folder not found; give a folder saved with "
            "save_pretrained, a hub id (org/name) or builtin"
        )
    task = builtin = builtin_seed = None
    if source.model == "builtin":
        builtin_params = section(params, "builtin")
        builtin_seed = read_builtin_seed(builtin_params)
        task = build(TaskConfig, section(builtin_params, "task"), "builtin.task")
        builtin = build(BuiltinModelConfig, section(builtin_params, role), f"builtin.{role}")
    return ModelSetup(role, source, builtin_seed, task, builtin)


def run(setup: ModelSetup, out: Path) -> ModelRef:
    """Resolve (or pretrain) the model and write `out` (= data/models/<role>) in one rename."""
    config = setup.source
    with atomic_path(out, directory=True) as temp:
        temp.mkdir(parents=True, exist_ok=True)
        if setup.builtin is not None and setup.task is not None and setup.builtin_seed is not None:
            from stages.modeling.builtin import train_builtin  # torch and tokenizers: only when pretraining

            train_builtin(setup.builtin, setup.task, setup.builtin_seed, setup.role, temp / BUILTIN_WEIGHTS)
            ref = ModelRef(BUILTIN_WEIGHTS, hash_folder(temp / BUILTIN_WEIGHTS), "causal_lm", builtin=True)
        else:
            ref = resolve(config.model, revision=config.revision, trust_remote_code=config.trust_remote_code)
        ref.save(temp)
    log.info("wrote %s: %s (%s)", out, ref.source, ref.revision)
    return ref
