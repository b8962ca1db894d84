"""How the probes' per-layer CPU work shares the cores: BLAS pinned to one thread, layers side by side.

scipy's OpenBLAS keeps a thread pool of its own beside torch's, and its threads spin for a while after each
call: a syrk on two BLAS threads followed by torch's work on two made the whole two-thread fit 1.8x slower
than with one BLAS thread (3.1 s against 1.7 s at 33 x 4096 x 512, `benchmarks/bench_probe.py` shapes).
So OpenBLAS runs on one thread, and where torch has several, independent layers run on them side by side,
each on one thread (a 512 x 512 eigendecomposition gains little from a second thread inside it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch
from threadpoolctl import ThreadpoolController


@functools.cache
def blas_pools() -> ThreadpoolController:
    """The BLAS thread pools loaded in this process, found once (threadpoolctl's lookup takes ~1.5 ms)."""
    return ThreadpoolController()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """OpenBLAS (scipy's, numpy's) on one thread inside the block."""
    with blas_pools().limit(limits=1, user_api="blas"):
        yield


def for_each_layer(work: Callable[[int], None], n_layers: int, device: torch.device) -> None:
    """work(layer) for every layer: in order on one thread or off the CPU, else on torch's threads side by side,
    each layer's own ops on one thread (torch's count is restored after). Layers must not share outputs."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1 or n_layers == 1:
        for layer in range(n_layers):
            work(layer)
        return
    torch.set_num_threads(1)  # the pool's threads start after this, so each sees one thread
    try:
        with one_blas_thread(), ThreadPoolExecutor(min(threads, n_layers)) as pool:
            list(pool.map(work, range(n_layers)))  # list(): re-raises a layer's exception here
    finally:
        torch.set_num_threads(threads)
