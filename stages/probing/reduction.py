"""Standardisation statistics, and each layer's basis, shared by all of the layer's fits.

Every fit of a layer (the K folds and the refit) standardises with the same statistics: the mean and std of all
rows some fit trains on, the labeled set. A held-out fold lends only its features' moments to them, never its
labels, so each fold's predictions on it stay out-of-sample. The mean does not change any fit (the bias is not
penalised and absorbs a shift); the std sets each dimension's penalty, and sharing it makes every fold's
problem the refit's restricted to its rows: one basis per layer instead of one per fit (see `layer_bases`).
Standardisation is folded into the probe's first linear map (W / std and an offset), so the features are only
copied one layer at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.linalg import blas

from stages.probing.cpu_threads import for_each_layer, one_blas_thread

STD_FLOOR = 1e-6  # constant features (e.g. the embedding of the shared last prompt token) standardise to 0
EIGEN_FLOOR = 1e-6  # Gram eigenvalues below this fraction of the largest are float32 noise: direction dropped


def training_stats(features: torch.Tensor, train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of each (mask, layer) over its training rows: two (n_masks, n_layers, d_model) tensors.

    features: (n_layers, n_examples, d_model); train: (n_masks, n_examples) bool.
    One pass per layer for all masks: moments of the features shifted by the layer's overall mean, so
    E[c^2] - E[c]^2 does not cancel (LLM hidden states have offsets in the thousands, fold means differ little).
    """
    weights = train.to(features.dtype) / train.sum(dim=1, keepdim=True)  # (n_masks, n_examples)
    mean = features.new_empty(train.shape[0], *features.shape[::2])
    var = torch.empty_like(mean)
    for layer, x in enumerate(features):  # one layer at a time: temporaries stay (n_examples, d_model)
        shift = x.mean(0)
        centred = x - shift
        shifted_mean = weights @ centred  # (n_masks, d_model)
        mean[:, layer] = shifted_mean + shift
        var[:, layer] = (weights @ centred.square_() - shifted_mean.square()).clamp_min(0.0)
    return mean, var.sqrt().clamp_min(STD_FLOOR)


def shared_stats(features: torch.Tensor, train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every fit's mean and std (n_fits, n_layers, d_model): those of all rows some fit trains on, repeated."""
    mean, std = training_stats(features, train.any(0, keepdim=True))
    return mean.expand(train.shape[0], -1, -1), std.expand(train.shape[0], -1, -1)


@dataclass(frozen=True)
class LayerBases:
    """Each layer's standardised training rows x (n_rows, d_model) in an orthonormal basis V of their row space.

    x = F V^T exactly (to the dropped directions, below float32 resolution), and a probe's weights lie in the row
    space of its rows, so W = V Z with ||W|| = ||Z||: every fit of the layer is a problem in the coordinates Z
    on the rows of F. By shape, V comes from the eigendecomposition of the smaller Gram matrix: x x^T (rows)
    or x^T x (dimensions). Ranks differ by layer: every tensor is padded with zeros to the largest.
    """

    rows: torch.Tensor  # (n_rows,) the examples some fit trains on
    features: torch.Tensor  # (n_layers, n_rows, rank) float32 F
    lift: torch.Tensor  # by rows: (n_layers, n_rows, rank) U / S, applied through x^T; else V (n_layers, d_model, rank)
    by_rows: bool

    def weights(self, features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """W = V Z (n_layers, d_model, m) on the standardised features, for coefficients z (n_layers, rank, m);
        features, mean and std as given to `layer_bases`."""
        coefficients = torch.bmm(self.lift, z.to(self.lift.dtype))
        if not self.by_rows:
            return coefficients
        # V Z = x^T (U / S) Z with x = (features[rows] - mean) / std, without rebuilding x: the coefficients go
        # onto all examples (0 on the others) so the features are read in place, not copied.
        spread = coefficients.new_zeros(features.shape[0], features.shape[1], z.shape[2])
        spread[:, self.rows] = coefficients
        raw = transposed_times(features, spread)  # (n_layers, d_model, m)
        return (raw - mean[..., None] * coefficients.sum(1, keepdim=True)) / std[..., None]


def transposed_times(matrix: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """matrix (L, n, m) transposed @ columns (L, n, c) -> (L, m, c), computed as (columns^T matrix)^T.

    The products of the probes are skinny (c = a few option slots per fit), bound by reading the large matrix:
    computed transposed, it is read once in its stored layout rather than as the strided operand of
    matrix^T @ columns; `benchmarks/bench_probe.py` times it.
    """
    return torch.bmm(columns.transpose(1, 2), matrix).transpose(1, 2)


def fast_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run at hardware speed here (several times float32's on CPUs with
    AVX512-BF16 or AMX, and on GPUs; emulated, and slower than float32, on other CPUs)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # oneDNN's own check (a private op, absent from builds without oneDNN, where bf16 is emulated anyway)
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def gram(x: torch.Tensor, by_rows: bool, syrk: bool) -> torch.Tensor:
    """x x^T (by rows) or x^T x; only its upper triangle is read (`torch.linalg.eigh(..., UPLO="U")`).

    syrk: BLAS syrk computes that triangle alone, half the flops of the full product: measured 1.7x faster at
    512 x 4096 on one thread (the transpose is a Fortran-ordered view, nothing is copied), on one BLAS thread
    (`stages.probing.cpu_threads`). Only where it is the process's one BLAS call at a time: scipy's OpenBLAS
    runs concurrent calls one after another (33 layers' syrk side by side on two threads took 429 ms, as long
    as in a row, against 359 ms for torch's products side by side). Else torch's product.
    """
    if syrk and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        routine = blas.ssyrk if x.dtype == torch.float32 else blas.dsyrk
        with one_blas_thread():
            return torch.from_numpy(routine(1.0, x.numpy().T, trans=int(by_rows)))
    return x @ x.T if by_rows else x.T @ x


def row_space_basis(eigenvalues: torch.Tensor, vectors: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """F = U S (n_layers, n_rows, rank) and the lift U / S from the eigendecompositions of the layers' row Grams
    x x^T, eigenvalues (n_layers, n_rows) ascending and vectors (n_layers, n_rows, n_rows); see `LayerBases`.

    The Gram is float32: directions whose eigenvalue is below EIGEN_FLOOR of the largest are float32 noise and
    stay 0 (their singular values are too small to move a fit: the penalty pins those coefficients at ~0).
    Beyond `rank` = min(n_rows, d_model), the eigenvalues of x x^T are 0. All layers at once: a few ops in all
    rather than a dozen per layer (`layer_bases` at 16 layers x 128 rows x 1024, one thread: 18.1 -> 16.7 ms).
    """
    eigenvalues, vectors = eigenvalues[:, -rank:], vectors[..., -rank:]
    kept = eigenvalues > EIGEN_FLOOR * eigenvalues[:, -1:].clamp_min(1e-30)
    singular = eigenvalues.clamp_min(0.0).sqrt()  # x = U S V^T: V = x^T U / S is applied through x^T
    return vectors * (singular * kept)[:, None], vectors * (kept / singular.masked_fill(~kept, 1.0))[:, None]


def dimension_basis(x: torch.Tensor, syrk: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """F = x V (n_rows, d_model) and V, the eigenbasis of one layer's x^T x, x (n_rows, d_model) standardised.

    Any orthonormal V keeps the problem exact (F is computed from x, all d_model directions kept), and the
    eigenbasis only has to precondition: where bfloat16 products are fast (`fast_bfloat16`), its Gram is one
    bfloat16 product, about 2x faster than syrk on this project's CPU (`benchmarks/bench_probe.py` times the
    fit). syrk: see `gram`.
    """
    narrow = x.bfloat16() if fast_bfloat16(x.device) else x
    basis = torch.linalg.eigh(gram(narrow, False, syrk).float(), UPLO="U")[1]
    return x @ basis, basis


def layer_bases(
    features: torch.Tensor, rows: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, by_rows: bool
) -> LayerBases:
    """The bases of every layer: features (n_layers, n_examples, d_model), rows (n_rows,) the training rows,
    mean and std (n_layers, d_model) the shared statistics of `shared_stats`. By rows: the eigendecomposition
    of x x^T (`row_space_basis`), else of x^T x (`dimension_basis`), x a layer's standardised rows."""
    n_layers, _, d_model = features.shape
    n_rows = rows.numel()
    every_row = n_rows == features.shape[1]  # the probe stage's case: only labeled rows are passed
    syrk = torch.get_num_threads() == 1  # else the layers run side by side (`for_each_layer`), see `gram`
    scale = std.reciprocal()
    offset = -mean * scale  # (x - mean) / std = offset + x * scale, one pass per layer
    if by_rows:
        eigenvalues, vectors = features.new_empty(n_layers, n_rows), features.new_empty(n_layers, n_rows, n_rows)
    else:
        reduced, lift = features.new_empty(n_layers, n_rows, d_model), features.new_empty(n_layers, d_model, d_model)

    def basis(layer: int) -> None:  # one standardised copy of one layer's rows per thread at a time
        x = features[layer] if every_row else features[layer].index_select(0, rows)
        x = torch.addcmul(offset[layer], x, scale[layer])
        if by_rows:
            eigenvalues[layer], vectors[layer] = torch.linalg.eigh(gram(x, True, syrk), UPLO="U")
        else:
            reduced[layer], lift[layer] = dimension_basis(x, syrk)

    for_each_layer(basis, n_layers, features.device)
    if by_rows:
        reduced, lift = row_space_basis(eigenvalues, vectors, min(n_rows, d_model))
    return LayerBases(rows=rows, features=reduced, lift=lift, by_rows=by_rows)
