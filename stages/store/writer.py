"""Writing an extract store: a resumable `.partial` sibling, shard by shard, renamed into place when complete.

DVC deletes a stage's outs before rerunning it, so work is staged in `<store>.partial` (a deterministic
name, unlike atomic.py's random temp dirs, so a rerun finds it). Its attributes hold a fingerprint of
everything that determines the values; a rerun with the same fingerprint keeps finished shards, any other
fingerprint starts fresh. A shard is finished when its `done/<index>` marker exists: the marker is created
only after the shard's files are written (zarr's LocalStore, since 3.1.3, writes each file to a temp name
and renames it) and fsynced, so a SIGKILL at any point leaves either a marked, whole shard or one that is redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from stages.sources.prompts import MAX_CHOICES
from stages.store.reader import CLOZE_ARRAYS, COMPLETE, HIDDEN, OPTION_LOGITS, OPTION_STATES

log = logging.getLogger(__name__)
DONE = "done"  # folder of per-shard markers inside the partial store (removed before the rename)
FINGERPRINT = "fingerprint"
COMPRESSORS = (ZstdCodec(level=3), Crc32cCodec())  # zstd, then a crc32c checksum over the compressed bytes


def partial_path(final: Path) -> Path:
    return final.with_name(final.name + ".partial")


def fingerprint(values: dict[str, Any]) -> str:
    """sha256 of the JSON of everything that determines the stored values."""
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class StoreLayout:
    n_examples: int
    n_layers: int
    d_model: int
    shard_examples: int
    dtype: str  # float16 | float32
    has_option_logits: bool
    has_cloze: bool = False  # cloze_logprob and cloze_norm arrays
    n_option_slots: int = 0  # option_states array of (n_examples, n_layers, n_option_slots, d_model); 0: none

    @property
    def n_shards(self) -> int:
        return -(-self.n_examples // self.shard_examples)

    def shard_range(self, shard: int) -> tuple[int, int]:
        return shard * self.shard_examples, min((shard + 1) * self.shard_examples, self.n_examples)

    def expected_bytes(self) -> int:
        """Uncompressed size on disk (float hidden states barely compress): what to check free space against."""
        item = 2 if self.dtype == "float16" else 4
        per_example = 4 * MAX_CHOICES * (int(self.has_option_logits) + len(CLOZE_ARRAYS) * int(self.has_cloze))
        states = self.n_layers * self.d_model * item * (1 + self.n_option_slots)
        return self.n_examples * (states + per_example)


def open_partial(path: Path, layout: Any, print_: str, create: Any = None) -> tuple[Any, set[int]]:
    """(group, finished shard indices): resume a partial store with fingerprint `print_`, or create one.

    `layout` needs `n_shards`; `create(path, layout, print_)` makes a fresh store (default: an extract store).
    """
    if path.exists():
        try:
            group = zarr.open_group(str(path), mode="r+")
            same = group.attrs.get(FINGERPRINT) == print_
        except Exception:  # unreadable metadata (killed while creating): start over
            same = False
        if same:
            (path / DONE).mkdir(exist_ok=True)  # gone if a run was killed while finalising: redo every shard
            done = {int(p.name) for p in (path / DONE).glob("*") if p.name.isdigit()}
            log.info("resuming %s: %d of %d shards already done", path, len(done), layout.n_shards)
            return group, done
        log.info("%s was made with other inputs or settings: starting fresh", path)
        shutil.rmtree(path)
    group = (create or create_store)(path, layout, print_)
    return group, set()


def new_group(path: Path, print_: str, add_arrays: Any) -> Any:
    """A fresh partial store at `path`: `add_arrays(group)` creates its arrays in a `.tmp` sibling, the
    fingerprint is written, and the store appears under its name with both or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    add_arrays(group)
    group.attrs[FINGERPRINT] = print_
    (tmp / DONE).mkdir()
    os.replace(tmp, path)
    return zarr.open_group(str(path), mode="r+")


def create_store(path: Path, layout: StoreLayout, print_: str) -> Any:
    return new_group(path, print_, lambda group: add_extract_arrays(group, layout))


def add_extract_arrays(group: Any, layout: StoreLayout) -> None:
    group.create_array(
        HIDDEN,
        shape=(layout.n_examples, layout.n_layers, layout.d_model),
        chunks=(layout.shard_examples, 1, layout.d_model),
        shards=(layout.shard_examples, layout.n_layers, layout.d_model),
        dtype=layout.dtype,
        compressors=COMPRESSORS,
        fill_value=0,
    )
    if layout.n_option_slots:  # same chunking as `hidden`, with every option of an example in one chunk
        group.create_array(
            OPTION_STATES,
            shape=(layout.n_examples, layout.n_layers, layout.n_option_slots, layout.d_model),
            chunks=(layout.shard_examples, 1, layout.n_option_slots, layout.d_model),
            shards=(layout.shard_examples, layout.n_layers, layout.n_option_slots, layout.d_model),
            dtype=layout.dtype,
            compressors=COMPRESSORS,
            fill_value=0,
        )
    per_option = [OPTION_LOGITS] * int(layout.has_option_logits) + list(CLOZE_ARRAYS) * int(layout.has_cloze)
    for name in per_option:  # (n_examples, MAX_CHOICES) float32, NaN beyond each example's options
        group.create_array(
            name,
            shape=(layout.n_examples, MAX_CHOICES),
            chunks=(layout.shard_examples, MAX_CHOICES),
            dtype="float32",
            compressors=COMPRESSORS,
            fill_value=float("nan"),
        )


def _fsync_tree(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            with file.open("rb") as handle:
                os.fsync(handle.fileno())


def write_shard(
    group: Any, layout: StoreLayout, shard: int, hidden: np.ndarray, logits: np.ndarray | None,
    extra: dict[str, np.ndarray] | None = None,
) -> None:  # fmt: skip
    """Write one whole shard (hidden states, letter logits, the other arrays by name: cloze, option states), then
    its done marker."""
    start, stop = layout.shard_range(shard)
    group[HIDDEN][start:stop] = hidden
    if logits is not None:
        group[OPTION_LOGITS][start:stop] = logits
    for name, values in (extra or {}).items():
        group[name][start:stop] = values
    mark_done(group, shard, (HIDDEN, OPTION_LOGITS, *CLOZE_ARRAYS, OPTION_STATES))


def mark_done(group: Any, shard: int, arrays: tuple[str, ...]) -> None:
    """fsync shard `shard`'s chunk files of `arrays` (those the store has), then create its done marker."""
    root = Path(group.store.root)
    for array in arrays:
        if (root / array / "c" / str(shard)).exists():
            _fsync_tree(root / array / "c" / str(shard))
    (root / DONE / str(shard)).touch()


class ShardWriter:
    """A writer thread behind a bounded queue: disk writes overlap the next shard's forward passes.

    At most `depth` shards wait in memory, so peak memory does not grow with the number of examples.
    """

    def __init__(self, group: Any, layout: StoreLayout, depth: int = 2) -> None:
        self.group, self.layout = group, layout
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="shard-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    write_shard(self.group, self.layout, *item)
                except BaseException as error:  # re-raised in the main thread
                    self.error = error

    def put(
        self, shard: int, hidden: np.ndarray, logits: np.ndarray | None, extra: dict[str, np.ndarray] | None = None
    ) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((shard, hidden, logits, extra))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def finalize(partial: Path, final: Path, attrs: dict[str, Any]) -> None:
    """Drop resume bookkeeping, write the attributes with `complete` last, rename into place."""
    shutil.rmtree(partial / DONE, ignore_errors=True)
    for stale in partial.rglob("*.partial"):  # temp files of zarr writes a SIGKILL interrupted
        stale.unlink()
    group = zarr.open_group(str(partial), mode="r+")
    group.attrs.put({**attrs, COMPLETE: False})  # replaces the fingerprint-only attrs
    group.attrs[COMPLETE] = True
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
