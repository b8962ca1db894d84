"""Benchmark pre-training throughput of one distilling arm with the cached teacher signal against the same arm with
the teacher online in the loop (what the study pays in every arm), in one run; prints one table with the ratio.

A randomly initialised Llama teacher (default: 4x the student's width, 6 layers) over random tokens; the cache is
built once by the `teacher_signal` code (its time is reported apart: it is paid once for every arm and seed); then
`--steps` optimiser steps of the arm are timed per mode after `--warmup` untimed steps, through the trainer's own loop.

    python benchmarks/bench_pretrain.py                                   # defaults: a few CPU minutes
    python benchmarks/bench_pretrain.py --teacher-d-model 1024 --teacher-layers 12 --seq-len 512   # on a GPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(workdir: Path, args: argparse.Namespace) -> None:
    """Teacher folder (like data/models/teacher), corpus folder (like data/pretrain/corpus), random tokens."""
    import torch

    from stages.modeling.builtin import new_llama
    from stages.modeling.loading import resolve
    from stages.pretraining.corpus import write_corpus
    from tests.tiny_models import make_tokenizer

    tokenizer = make_tokenizer(vocab_size=768)
    torch.manual_seed(0)
    teacher = new_llama(args.teacher_d_model, args.teacher_layers, max(2, args.teacher_d_model // 64), tokenizer)
    teacher.save_pretrained(workdir / "teacher" / "weights")
    tokenizer.save_pretrained(workdir / "teacher" / "weights")
    resolve(str(workdir / "teacher" / "weights"), revision=None, trust_remote_code=False).save(workdir / "teacher")
    rng = np.random.default_rng(0)
    n_train = args.batch_size * (args.steps + args.warmup)
    train = rng.integers(0, len(tokenizer), (n_train, args.seq_len), dtype=np.int32)
    val = rng.integers(0, len(tokenizer), (args.batch_size, args.seq_len), dtype=np.int32)
    write_corpus(workdir / "corpus", train, val, {"config": {"source": "random"}})


def timed_steps(workdir: Path, signal: Path, args: argparse.Namespace) -> tuple[float, int]:
    """(seconds for `--steps` steps after `--warmup` untimed ones, teacher parameters)."""
    import torch

    from stages.pretraining.config import (
        ArmSetup,
        PretrainHLDConfig,
        PretrainKDConfig,
        PretrainTrainConfig,
        StudentConfig,
    )
    from stages.pretraining.run import loop, prepare_arm

    train = PretrainTrainConfig(steps=args.steps + args.warmup, batch_size=args.batch_size, mixed_precision="auto")
    hld = PretrainHLDConfig() if args.arm in ("hldc", "hldf") else None
    student = StudentConfig(d_model=args.d_model, n_layers=args.n_layers, n_heads=max(2, args.d_model // 64))
    setup = ArmSetup(args.arm, 0, student, train, PretrainKDConfig(), hld)
    run = prepare_arm(setup, workdir / "corpus", signal, workdir / "teacher")
    loop(run, None, steps=args.warmup)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    loop(run, None, steps=args.steps)  # the batch order restarts: same token count, a different draw
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, run.signal.teacher_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arm", default="hldc", choices=["kd", "hldc", "hldf"])
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--teacher-d-model", type=int, default=256)
    parser.add_argument("--teacher-layers", type=int, default=6)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top-k", type=int, default=32)
    args = parser.parse_args()

    from stages.pretraining.config import SignalConfig
    from stages.pretraining.corpus import read_corpus
    from stages.pretraining.signal_store import run as cache_signal

    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        build(workdir, args)
        train, _, _ = read_corpus(workdir / "corpus")
        start = time.perf_counter()
        cache_signal(SignalConfig(top_k=args.top_k), train, workdir / "teacher", workdir / "cached.zarr")
        cache_seconds = time.perf_counter() - start
        cache_signal(SignalConfig(top_k=args.top_k, online=True), train, workdir / "teacher", workdir / "online.zarr")
        cached, teacher_params = timed_steps(workdir, workdir / "cached.zarr", args)
        online, _ = timed_steps(workdir, workdir / "online.zarr", args)
    tokens = args.steps * args.batch_size * args.seq_len
    print(
        f"arm {args.arm}: student d_model {args.d_model} x {args.n_layers} layers; teacher {teacher_params:,} "
        f"parameters; {args.steps} steps of {args.batch_size} x {args.seq_len} tokens"
    )
    print(f"{'mode':<28}{'seconds':>10}{'tokens/s':>12}")
    print(f"{'cached teacher signal':<28}{cached:>10.2f}{tokens / cached:>12,.0f}")
    print(f"{'teacher online':<28}{online:>10.2f}{tokens / online:>12,.0f}")
    print(f"{'ratio cached / online':<28}{online / cached:>10.2f}x")
    print(f"(building the cache: {cache_seconds:.2f} s for {train.shape[0]} sequences, paid once for every arm/seed)")


if __name__ == "__main__":
    main()
