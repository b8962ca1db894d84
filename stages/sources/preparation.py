"""`prepare`: load a dataset, carve the four splits, write them as parquet (config, checks, the run)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.atomic import atomic_path
from stages.core.config import SEED, Section, build, read_seed
from stages.core.errors import InputError
from stages.core.params import section
from stages.sources.benchmarks import BENCHMARKS
from stages.sources.builtin_world import BUILTIN_SEED, TaskConfig, read_builtin_seed
from stages.sources.data_config import PrepareConfig
from stages.sources.loading import LoadedDataset, load_dataset_splits
from stages.sources.schema import SPLITS, write_split
from stages.sources.shots import SHOTS_FILE, shot_pool
from stages.sources.splits import assign_splits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareSetup:
    """Everything `prepare` reads from params.yaml, checked."""

    data: PrepareConfig
    seed: int
    """The pipeline's seed: which examples go to which split."""
    task: TaskConfig | None
    """builtin.task, only for the builtin dataset."""
    builtin_seed: int | None = None
    """builtin.seed, only for the builtin dataset: its world and question pool."""


@dataclass(frozen=True)
class PreparePaths:
    raw: Path
    """The local-data folder `prepare` depends on in dvc.yaml (data/raw)."""
    out: Path
    """Folder for {labeled,transfer,val,test}.parquet, replaced atomically."""


PARAMS = [
    SEED,
    Section("data", PrepareConfig),
    BUILTIN_SEED,
    Section("builtin.task", TaskConfig, "data.dataset: builtin"),
]


def read_prepare_setup(params: dict[str, Any]) -> PrepareSetup:
    data = build(PrepareConfig, section(params, "data"), "data")
    task = builtin_seed = None
    if data.dataset == "builtin":
        builtin = section(params, "builtin")
        task = build(TaskConfig, section(builtin, "task"), "builtin.task")
        builtin_seed = read_builtin_seed(builtin)
    return PrepareSetup(data, read_seed(params), task, builtin_seed)


def check_tracked(config: PrepareConfig, raw: Path) -> None:
    """Local data outside data/raw/ is invisible to `dvc repro` (editing it would rerun nothing): an error, or a
    warning where `data.allow_untracked` says so."""
    if config.path is not None:
        key, source = "data.path", config.path
    elif config.dataset != "builtin" and config.dataset not in BENCHMARKS:
        key, source = "data.dataset", config.dataset
    else:
        return
    # abspath, not resolve: judged by the path as written (relative to the repo root dvc runs in).
    if Path(os.path.abspath(source)).is_relative_to(os.path.abspath(raw)):
        return
    where = f"{key}={source} is outside {raw}/, the only local data `prepare` depends on in dvc.yaml"
    if not config.allow_untracked:
        name = Path(source.rstrip("/")).name
        raise InputError(
            f"{where}, so `dvc repro` would not notice edits to it: copy it there (`cp -r {source} {raw}/`) and set "
            f"{key}={raw}/{name}, or set data.allow_untracked: true"
        )
    log.warning("%s: changes to it will not rerun `prepare` under `dvc repro` (data.allow_untracked: true)", where)


PromptFitter = Callable[[str, list[dict]], tuple[list[dict], dict[str, Any]]]


def run(setup: PrepareSetup, paths: PreparePaths, fit: PromptFitter | None = None) -> dict[str, int]:
    """Load, split, and write the four parquet files into `paths.out` atomically; returns the counts.

    `fit` (stages/modeling/fitting.py, given by the command when it has the models) applies prompt.on_too_long to
    each split's rows; what it did goes into that split's metadata (`prompt_fit`)."""
    config, seed, out_dir = setup.data, setup.seed, paths.out
    check_tracked(config, paths.raw)
    # The builtin pool comes from builtin.seed (the task, fixed like a real dataset); `seed` only splits it.
    builtin_seed = setup.builtin_seed or 0
    loaded: LoadedDataset = load_dataset_splits(config.dataset, config.path, config.on_invalid, setup.task,
                                                builtin_seed)  # fmt: skip
    prepared, notes = assign_splits(loaded.splits, config, seed)
    fitted = {}
    if fit is not None:
        for name in SPLITS:
            prepared[name], fitted[name] = fit(name, prepared[name])
    for note in notes:  # carving changes what the splits mean: say so loudly
        (log.info if note.startswith("pool of") else log.warning)("%s: %s", config.dataset, note)
    counts = {name: len(prepared[name]) for name in SPLITS}
    # Only what shapes every file goes in every file: a file's bytes must not depend on another split's size,
    # or a sweep over data.labeled would change transfer.parquet and rerun the transfer extraction.
    metadata = {
        "dataset": config.dataset,
        "origin": loaded.origin,
        "seed": str(seed),
        **({"builtin_seed": str(setup.builtin_seed)} if setup.builtin_seed is not None else {}),
        "on_invalid": config.on_invalid,
        "skipped": json.dumps(loaded.skipped, sort_keys=True),
        "carving": json.dumps(notes),
    }
    with atomic_path(out_dir, directory=True) as temp:
        temp.mkdir(parents=True, exist_ok=True)
        for name in SPLITS:
            own = {"split": name, "n_examples": str(counts[name])}
            if name in fitted:
                own["prompt_fit"] = json.dumps(fitted[name], sort_keys=True)
            write_split(prepared[name], temp / f"{name}.parquet", {**metadata, **own})
        pool = shot_pool(prepared["labeled"])  # few-shot examples (prompt.shots), from labeled only
        write_split(pool, temp / SHOTS_FILE, {**metadata, "split": "shots", "n_examples": str(len(pool))})
    log.info("wrote %s: %s", out_dir, counts)
    return counts
