"""`teacher_signal`: one teacher pass over the training corpus into a resumable sharded zarr store.

Layout of `data/pretrain/teacher_signal.zarr` (zarr v3 group), one chunk file per array and shard of
`shard_sequences` sequences:
- `topk_logprobs` (n_train, seq_len, top_k) float16/32: the teacher's top-k next-token log-probabilities;
- `topk_ids` (n_train, seq_len, top_k) int32: their token ids;
- `kept_mass` (n_train, seq_len) float32: the probability mass the top-k keep;
- `hidden` (n_train, seq_len, d_teacher) float16/32: the hidden state of teacher layer `layer` at every position;
- attributes: the fingerprint's inputs, `layer`, `top_k`, `mean_kept_mass`, `teacher_params`, `complete` (last).
With `online: true` the store holds no arrays, only `online: true`: the arms run the teacher themselves.
Resume, checksums (crc32c over every compressed chunk) and the fingerprint rule are extract's (store/writer.py).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from tqdm import tqdm

from stages.core.errors import InputError
from stages.modeling.loading import ModelRef
from stages.pretraining.config import SignalConfig
from stages.pretraining.signal import Teacher, load_signal_teacher
from stages.store.reader import COMPLETE
from stages.store.writer import COMPRESSORS, finalize, fingerprint, mark_done, new_group, open_partial, partial_path

log = logging.getLogger(__name__)
ARRAYS = ("topk_logprobs", "topk_ids", "kept_mass", "hidden")


class SignalLayout:
    def __init__(self, n_sequences: int, seq_len: int, top_k: int, d_model: int, config: SignalConfig) -> None:
        self.n_sequences, self.seq_len, self.top_k, self.d_model = n_sequences, seq_len, top_k, d_model
        self.shard, self.dtype = config.shard_sequences, config.dtype

    @property
    def n_shards(self) -> int:
        return -(-self.n_sequences // self.shard)

    def shard_range(self, shard: int) -> tuple[int, int]:
        return shard * self.shard, min((shard + 1) * self.shard, self.n_sequences)

    def expected_bytes(self) -> int:
        item = 2 if self.dtype == "float16" else 4
        per_position = self.top_k * (item + 4) + 4 + self.d_model * item
        return self.n_sequences * self.seq_len * per_position

    def add_arrays(self, group: Any) -> None:
        n, s, k, d = self.n_sequences, self.seq_len, self.top_k, self.d_model
        shapes = {
            "topk_logprobs": ((n, s, k), self.dtype),
            "topk_ids": ((n, s, k), "int32"),
            "kept_mass": ((n, s), "float32"),
            "hidden": ((n, s, d), self.dtype),
        }
        for name, (shape, dtype) in shapes.items():
            chunks = (self.shard, *shape[1:])
            group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, compressors=COMPRESSORS, fill_value=0)


def create_signal_store(path: Path, layout: SignalLayout, print_: str) -> Any:
    return new_group(path, print_, layout.add_arrays)


def write_shard(group: Any, teacher: Teacher, layout: SignalLayout, shard: int, train: np.ndarray, batch: int) -> None:
    """The teacher's signal for shard `shard`'s sequences, in batches that never cross the shard."""
    start, stop = layout.shard_range(shard)
    for begin in range(start, stop, batch):
        end = min(begin + batch, stop)
        signal = teacher(torch.from_numpy(train[begin:end].astype(np.int64)))
        group["topk_logprobs"][begin:end] = signal.logprobs.cpu().numpy().astype(layout.dtype)
        group["topk_ids"][begin:end] = signal.ids.cpu().numpy().astype(np.int32)
        group["kept_mass"][begin:end] = signal.kept_mass().cpu().numpy()
        group["hidden"][begin:end] = signal.hidden.cpu().numpy().astype(layout.dtype)
    mark_done(group, shard, ARRAYS)


def determining_values(train: np.ndarray, ref: ModelRef, teacher: Teacher, config: SignalConfig) -> dict[str, Any]:
    """Everything the stored values depend on; the store's fingerprint is their hash."""
    return {
        "corpus_sha256": hashlib.sha256(np.ascontiguousarray(train).tobytes()).hexdigest(),
        "teacher": {"source": ref.source, "revision": ref.revision},
        "layer": teacher.layer,
        "top_k": config.top_k,
        "dtype": config.dtype,
        "shard_sequences": config.shard_sequences,
        "batch_size": config.batch_size,  # batch composition changes float rounding
        "compute": f"{teacher.device.type}:{next(teacher.model.parameters()).dtype}",
    }


def run(config: SignalConfig, train: np.ndarray, teacher_dir: Path, out: Path) -> dict[str, Any]:
    """Write the store for the (n_train, seq_len) corpus (resuming `<out>.partial` when it matches)."""
    ref = ModelRef.read(teacher_dir)
    if config.online:
        attrs = {"online": True, "teacher": {"source": ref.source, "revision": ref.revision}, "config": asdict(config)}
        partial = partial_path(out)
        new_group(partial, fingerprint(attrs), lambda group: None)
        finalize(partial, out, attrs)
        log.info("pretrain.signal.online: no cache; the distilling arms run the teacher in their steps")
        return attrs
    teacher = load_signal_teacher(teacher_dir, config.layer, config.top_k, config.device)
    d_teacher = teacher.model.config.hidden_size
    layout = SignalLayout(train.shape[0], train.shape[1], config.top_k, d_teacher, config)
    log.info(
        "teacher signal: %d sequences x %d positions -> about %.1f MB on disk",
        layout.n_sequences,
        layout.seq_len,
        layout.expected_bytes() / 1e6,
    )
    determining = determining_values(train, ref, teacher, config)
    print_ = fingerprint(determining)
    group, done = open_partial(partial_path(out), layout, print_, create_signal_store)
    todo = [shard for shard in range(layout.n_shards) if shard not in done]
    for shard in tqdm(todo, desc="teacher signal", unit="shard", mininterval=5):
        write_shard(group, teacher, layout, shard, train, config.batch_size)
    mass = float(np.asarray(group["kept_mass"][:], dtype=np.float64).mean())
    attrs = {
        **determining,
        "online": False,
        "fingerprint": print_,
        "n_sequences": layout.n_sequences,
        "seq_len": layout.seq_len,
        "d_teacher": d_teacher,
        "teacher_params": teacher.n_params,
        "n_teacher_layers": teacher.model.config.num_hidden_layers + 1,
        "mean_kept_mass": mass,
    }
    finalize(partial_path(out), out, attrs)
    log.info("teacher signal: top-%d keeps %.4f of the probability mass on average", config.top_k, mass)
    return attrs


class SignalStore:
    """Reading a finished store: batches of sequences as tensors."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise InputError(f"{path}: teacher signal not found (run `dvc repro teacher_signal` first)")
        self.group = zarr.open_group(str(path), mode="r")
        if not self.group.attrs.get(COMPLETE, False):
            raise InputError(f"{path}: teacher signal is unfinished (interrupted); rerun teacher_signal")
        self.attrs: dict[str, Any] = dict(self.group.attrs)
        self.path = path

    @property
    def online(self) -> bool:
        return bool(self.attrs["online"])

    def load(self) -> dict[str, np.ndarray]:
        """Every array in memory (the builtin corpus's is a few MB; a large one: use online or a bigger machine)."""
        arrays: Any = self.group  # zarr's Group stubs type its items as groups; these are arrays
        return {name: np.asarray(arrays[name][:]) for name in ("topk_logprobs", "topk_ids", "hidden")}
