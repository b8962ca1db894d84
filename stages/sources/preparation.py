"""`prepare`: load a dataset, carve the four splits, write them as parquet (config, checks, the run)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.atomic import atomic_path
from stages.core.config import SEED, Section, build, read_seed
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


def warn_if_not_a_dep(config: PrepareConfig, raw: Path) -> None:
    """Local data outside data/raw/ is invisible to `dvc repro`: say so, since editing it reruns nothing."""
    if config.path is not None:
        key, source = "data.path", config.path
    elif config.dataset != "builtin" and config.dataset not in BENCHMARKS:
        key, source = "data.dataset", config.dataset
    else:
        return
    # abspath, not resolve: judged by the path as written (relative to the repo root dvc runs in).
    if not Path(os.path.abspath(source)).is_relative_to(os.path.abspath(raw)):
        log.warning(
            "%s=%s is outside %s/, which is the only local data `prepare` depends on in dvc.yaml: "
            "changes to it will not rerun `prepare` under `dvc repro`; move or copy it under %s/ "
            "(or `dvc add` it there) and point %s at it",
            key,
            source,
            raw,
            raw,
            key,
        )


def run(setup: PrepareSetup, paths: PreparePaths) -> dict[str, int]:
    """Load, split, and write the four parquet files into `paths.out` atomically; returns the counts."""
    config, seed, out_dir = setup.data, setup.seed, paths.out
    warn_if_not_a_dep(config, paths.raw)
    # The builtin pool comes from builtin.seed (the task, fixed like a real dataset); `seed` only splits it.
    builtin_seed = setup.builtin_seed or 0
    loaded: LoadedDataset = load_dataset_splits(config.dataset, config.path, config.on_invalid, setup.task,
                                                builtin_seed)  # fmt: skip
    prepared, notes = assign_splits(loaded.splits, config, seed)
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
            write_split(prepared[name], temp / f"{name}.parquet", {**metadata, **own})
        pool = shot_pool(prepared["labeled"])  # few-shot examples (prompt.shots), from labeled only
        write_split(pool, temp / SHOTS_FILE, {**metadata, "split": "shots", "n_examples": str(len(pool))})
    log.info("wrote %s: %s", out_dir, counts)
    return counts
