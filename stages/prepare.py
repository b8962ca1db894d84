"""Load a dataset into the canonical schema; write labeled/transfer/val/test.

Reads params `seed`, `data` and `builtin.task`; writes `data/prepared/{labeled,transfer,val,test}.parquet`
(the whole folder atomically; every file records dataset, origin, seed, its n_examples, skipped rows, carving).

Split rule. Every example gets a rank: sha256 of (seed, id). Ranking by a per-example hash, not a shuffle,
means an example's place never depends on how big its pool is. The dataset's own splits are used:
train -> the pool, val (dev/validation) -> val, test -> test; val and test keep their first `data.val` and
`data.test` examples in rank order. From the pool, `labeled` = the FIRST `data.labeled` in rank order and
`transfer` = the LAST `data.transfer`: disjoint, and a sweep over `data.labeled` leaves `transfer` (and its
cached teacher features) unchanged.
Carving, logged whenever it happens: a dataset without a training split (MMLU: dev + val; the public AQuA-RAT
copy: dev only) gives its first `data.val` val examples in rank order to `val` and the rest to the pool. A source
without val (or test) gives the first `data.test` of the pool to test, then the next `data.val` to val.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from stages.atomic import atomic_path
from stages.benchmark_readers import BENCHMARKS
from stages.datasets_io import LoadedDataset, load_dataset_splits
from stages.errors import InputError, exits_cleanly
from stages.params import load_params, section
from stages.schema import SPLITS, write_split

log = logging.getLogger(__name__)
# The dvc.yaml dep of `prepare` for local data: DVC cannot put a param (data.path, null by default) in deps.
RAW_DIR = Path("data/raw")


@dataclass(frozen=True)
class PrepareConfig:
    """The `data` section of params.yaml."""

    dataset: str = "builtin"
    """builtin | arc_easy | arc_challenge | mmlu | aqua_rat | path (under data/raw/) to a canonical file or folder."""
    path: str | None = None
    """Local copy of arc_*/mmlu/aqua_rat in its original published format, under data/raw/; null: the hub."""
    labeled: int = 64
    """Examples with gold answers the student may train on (the limited-data budget)."""
    transfer: int = 1024
    """Further training examples, labeled only by the teacher / probe (gold kept for diagnostics)."""
    val: int = 256
    """At most this many validation examples."""
    test: int = 512
    """At most this many test examples."""
    on_invalid: str = "error"
    """error | skip: skipping drops bad rows and reports how many per file."""

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise InputError(f"data.dataset must be a dataset name or a path; got {self.dataset!r}")
        if self.path is not None and not isinstance(self.path, str):
            raise InputError(f"data.path must be a folder path or null; got {self.path!r}")
        for name, minimum in (("labeled", 1), ("transfer", 0), ("val", 1), ("test", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise InputError(f"data.{name} must be an integer >= {minimum}; got {value!r}")
        if self.on_invalid not in ("error", "skip"):
            raise InputError(f"data.on_invalid must be `error` or `skip`; got {self.on_invalid!r}")

    @classmethod
    def from_params(cls, data_params: dict) -> PrepareConfig:
        unknown = set(data_params) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"params.yaml: unknown key(s) in `data`: {sorted(unknown)}")
        return cls(**data_params)


def warn_if_not_a_dep(config: PrepareConfig) -> None:
    """Local data outside data/raw/ is invisible to `dvc repro`: say so, since editing it reruns nothing."""
    if config.path is not None:
        key, source = "data.path", config.path
    elif config.dataset != "builtin" and config.dataset not in BENCHMARKS:
        key, source = "data.dataset", config.dataset
    else:
        return
    # abspath, not resolve: judged by the path as written (relative to the repo root dvc runs in).
    if not Path(os.path.abspath(source)).is_relative_to(os.path.abspath(RAW_DIR)):
        log.warning(
            "%s=%s is outside %s/, which is the only local data `prepare` depends on in dvc.yaml: "
            "changes to it will not rerun `prepare` under `dvc repro`; move or copy it under %s/ "
            "(or `dvc add` it there) and point %s at it",
            key,
            source,
            RAW_DIR,
            RAW_DIR,
            key,
        )


def rank_order(examples: list[dict], seed: int) -> list[dict]:
    """Examples sorted by sha256(seed, id): stable whatever else is in the pool."""
    return sorted(examples, key=lambda example: hashlib.sha256(f"{seed}\x00{example['id']}".encode()).digest())


def assign_splits(splits: dict[str, list[dict]], config: PrepareConfig, seed: int) -> tuple[dict, list[str]]:
    """Canonical examples by dataset role -> the four prepared splits, plus notes on any carving done.

    The last note is always `pool of <n> training examples`."""
    ranked = {role: rank_order(examples, seed) for role, examples in splits.items() if examples}
    has_train = "train" in ranked
    notes: list[str] = []
    if not has_train and "val" in ranked:
        n_val = min(config.val, len(ranked["val"]))
        ranked["val"], ranked["train"] = ranked["val"][:n_val], ranked["val"][n_val:]
        notes.append(f"no training split: val keeps {n_val} examples, the other {len(ranked['train'])} form the pool")
    pool = ranked.get("train", [])
    for role, size in (("test", config.test), ("val", config.val)):
        if role not in ranked:
            ranked[role], pool = pool[:size], pool[size:]
            notes.append(f"no {role} split: {role} = first {len(ranked[role])} examples of the training pool")
    n_wanted = config.labeled + config.transfer
    if n_wanted > len(pool):
        carved = (
            "" if has_train else f" (it has no training split: the pool is what val leaves after data.val={config.val})"
        )
        raise InputError(
            f"data.labeled={config.labeled} + data.transfer={config.transfer} = {n_wanted}, but the training pool "
            f"of {config.dataset} has only {len(pool)} examples{carved}; lower data.labeled or data.transfer"
        )
    prepared = {
        "labeled": pool[: config.labeled],
        "transfer": pool[len(pool) - config.transfer :],
        "val": ranked["val"][: config.val],
        "test": ranked["test"][: config.test],
    }
    for role in ("val", "test"):
        if not prepared[role]:
            raise InputError(f"{config.dataset}: the {role} split is empty (the training pool was too small to carve)")
    return prepared, [*notes, f"pool of {len(pool)} training examples"]


def prepare(config: PrepareConfig, seed: int, builtin_task: dict, out_dir: Path) -> dict[str, int]:
    """Load, split, and write the four parquet files into `out_dir` atomically; returns the counts."""
    warn_if_not_a_dep(config)
    loaded: LoadedDataset = load_dataset_splits(config.dataset, config.path, config.on_invalid, builtin_task, seed)
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
        "on_invalid": config.on_invalid,
        "skipped": json.dumps(loaded.skipped, sort_keys=True),
        "carving": json.dumps(notes),
    }
    with atomic_path(out_dir, directory=True) as temp:
        temp.mkdir(parents=True, exist_ok=True)
        for name in SPLITS:
            own = {"split": name, "n_examples": str(counts[name])}
            write_split(prepared[name], temp / f"{name}.parquet", {**metadata, **own})
    log.info("wrote %s: %s", out_dir, counts)
    return counts


@exits_cleanly
def main(
    params_file: Annotated[Path, typer.Option(help="Parameters file (reads seed, data, builtin.task).")] = Path(
        "params.yaml"
    ),
    out_dir: Annotated[Path, typer.Option(help="Folder for {labeled,transfer,val,test}.parquet.")] = Path(
        "data/prepared"
    ),
) -> None:
    """Load a dataset into the canonical schema; write labeled/transfer/val/test parquet splits.

    Sources (data.dataset): builtin, arc_easy, arc_challenge, mmlu, aqua_rat, or a canonical file/folder.

    data.path: a local copy of arc_*/mmlu/aqua_rat in its original format; null loads from the hub.

    Split rule: examples are ranked by sha256(seed, id); labeled = the first data.labeled of the pool.

    transfer = the last data.transfer of the pool, so a sweep over data.labeled keeps transfer fixed.

    Bad rows stop the stage (exit 2, file and line named) unless data.on_invalid is skip.
    """
    params = load_params("prepare", params_file)
    config = PrepareConfig.from_params(section(params, "data"))
    seed = params.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"params.yaml: seed must be an integer; got {seed!r}")
    builtin_task = section(section(params, "builtin"), "task") if config.dataset == "builtin" else {}
    prepare(config, seed, builtin_task, out_dir)
