"""The probes' per-layer CPU work on one thread and on several: same bases, torch's thread count restored."""

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from stages.probing.cpu_threads import for_each_layer, one_blas_thread
from stages.probing.reduction import gram, layer_bases, shared_stats


@pytest.fixture
def threads():
    """Run a test at a given torch thread count, restoring the session's after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def features_and_rows(n_layers=4, n_examples=48, d_model=80, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_layers, n_examples, d_model)) * np.exp(rng.normal(size=d_model)) + 30
    return torch.tensor(features, dtype=torch.float32), torch.arange(n_examples)


@pytest.mark.parametrize("by_rows", [True, False])
def test_bases_are_the_same_on_one_thread_and_on_two(threads, by_rows):
    """One thread: syrk Grams; two: torch's products, layers side by side. The eigenvectors may differ in sign
    or within a repeated eigenvalue, so compare what the fits see: the features' Gram F F^T and the map F lift^T
    (by rows the projector onto the kept directions, by dimensions x V V^T = x)."""
    features, rows = features_and_rows()
    mean, std = shared_stats(features, torch.ones(1, features.shape[1], dtype=torch.bool))
    threads(1)
    alone = layer_bases(features, rows, mean[0], std[0], by_rows=by_rows)
    threads(2)
    side_by_side = layer_bases(features, rows, mean[0], std[0], by_rows=by_rows)
    assert torch.get_num_threads() == 2  # the layers ran on one thread each; the count is back
    for bases in (alone, side_by_side):
        assert bases.features.shape == (4, 48, 48 if by_rows else 80)
    f, g = alone.features.double(), side_by_side.features.double()
    assert torch.allclose(f @ f.transpose(1, 2), g @ g.transpose(1, 2), rtol=1e-4, atol=1e-3)
    maps = [b.features.double() @ b.lift.double().transpose(1, 2) for b in (alone, side_by_side)]
    assert torch.allclose(*maps, atol=1e-4)


def test_a_layer_that_fails_fails_the_call_and_restores_the_threads(threads):
    threads(2)
    done = []

    def work(layer):
        if layer == 2:
            raise ValueError("layer 2 is broken")
        done.append(layer)

    with pytest.raises(ValueError, match="layer 2 is broken"):
        for_each_layer(work, 4, torch.device("cpu"))
    assert torch.get_num_threads() == 2
    assert set(done) <= {0, 1, 3}


def test_every_layer_runs_once_whatever_the_thread_count(threads):
    for count in (1, 2, 3):
        threads(count)
        seen = []
        for_each_layer(seen.append, 5, torch.device("cpu"))
        assert sorted(seen) == [0, 1, 2, 3, 4]


def test_one_blas_thread_pins_openblas_and_restores_it():
    pools = [info for info in threadpool_info() if info["user_api"] == "blas"]
    if not pools:
        pytest.skip("no BLAS thread pool loaded in this process")
    before = [info["num_threads"] for info in pools]
    with one_blas_thread():
        assert all(info["num_threads"] == 1 for info in threadpool_info() if info["user_api"] == "blas")
    assert [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"] == before


@pytest.mark.parametrize("by_rows", [True, False])
@pytest.mark.parametrize("syrk", [True, False])
def test_gram_upper_triangle_on_either_path(by_rows, syrk):
    """syrk fills the upper triangle only; torch's product all of it: eigh reads the upper."""
    x = torch.randn(30, 50)
    expected = x @ x.T if by_rows else x.T @ x
    assert torch.allclose(torch.triu(gram(x, by_rows, syrk)), torch.triu(expected), rtol=1e-5, atol=1e-4)
