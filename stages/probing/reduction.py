"""Standardisation statistics and the exact row-space reduction of each fit's training matrix.

Standardisation uses each fit's training rows' mean and std. It is folded into the probe's first linear map
(W / std and an offset) so the features are never copied once per fold; only the row-space reduction builds
one standardised copy of a fit's training rows, one fit at a time.
"""

from __future__ import annotations

import torch

STD_FLOOR = 1e-6  # constant features (e.g. the embedding of the shared last prompt token) standardise to 0
EIGEN_FLOOR = 1e-6  # Gram eigenvalues below this fraction of the largest are float32 noise: direction dropped


def training_stats(features: torch.Tensor, train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of each (fold, layer) over its training rows: two (n_fits, n_layers, d_model) tensors.

    features: (n_layers, n_examples, d_model); train: (n_fits, n_examples) bool.
    One pass per layer for all fits: moments of the features shifted by the layer's overall mean, so
    E[c^2] - E[c]^2 does not cancel (LLM hidden states have offsets in the thousands, fold means differ little).
    """
    weights = train.to(features.dtype) / train.sum(dim=1, keepdim=True)  # (n_fits, n_examples)
    mean = features.new_empty(train.shape[0], *features.shape[::2])
    var = torch.empty_like(mean)
    for layer, x in enumerate(features):  # one layer at a time: temporaries stay (n_examples, d_model)
        shift = x.mean(0)
        centred = x - shift
        shifted_mean = weights @ centred  # (n_fits, d_model)
        mean[:, layer] = shifted_mean + shift
        var[:, layer] = (weights @ centred.square_() - shifted_mean.square()).clamp_min(0.0)
    return mean, var.sqrt().clamp_min(STD_FLOOR)


def standardised_rows(
    features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """(n_layers, n_rows, d_model) training rows of one fit, standardised with that fit's statistics."""
    return features.index_select(1, rows).sub_(mean[:, None, :]).div_(std[:, None, :])  # one copy, in place after


def row_space(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact reduction of a batch of standardised training matrices x (n_layers, n_rows, d_model).

    The penalty is isotropic in W and the data term sees W only through x W, so the optimum lies in the row
    space of x: with x = U S V^T (rank r <= min(n_rows, d_model)), W = V Z and the problem in Z has features
    U S and the same penalty ||Z||^2. Returns the reduced features U S (n_layers, n_rows, r), the squared
    singular values (n_layers, r) (0 for dropped directions) and the map back `lift`: W = lift @ Z, given
    either as V (n_layers, d_model, r) or, when n_rows < d_model, as U / S (n_layers, n_rows, r) to apply
    through x^T (V itself would cost another n_rows x d_model x r product per layer).
    Eigendecomposition of the smaller Gram matrix; directions below float32 resolution are dropped (their
    singular values are too small to move the fit: the penalty pins those coefficients at ~0).
    """
    n_rows, d_model = x.shape[1:]
    by_rows = n_rows < d_model
    gram = x @ x.transpose(1, 2) if by_rows else x.transpose(1, 2) @ x  # (n_layers, r, r)
    # float64 from here: the reduced problem is solved in float64 (see `stages.probing.logistic`).
    eigenvalues, vectors = torch.linalg.eigh(gram.double())
    kept = eigenvalues > EIGEN_FLOOR * eigenvalues[:, -1:].clamp_min(1e-30)
    squared = torch.where(kept, eigenvalues, torch.zeros_like(eigenvalues))
    singular = squared.sqrt()
    if by_rows:
        reduced = vectors * singular[:, None, :]  # U S
        lift = vectors / singular.masked_fill(~kept, 1.0)[:, None, :] * kept[:, None, :]
    else:
        lift = vectors * kept[:, None, :]  # V
        reduced = x.double() @ lift
    return reduced, squared, lift


def reduce_fits(
    features: torch.Tensor, train: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Row-space features of every (fit, layer) problem, padded to a common rank, and each fit's lift.

    features: (n_layers, n_examples, d_model); train: (n_fits, n_examples) bool; mean, std from `training_stats`.
    Returns the reduced features (n_fits * n_layers, n_examples, rank) float64, 0 on each fit's held-out rows
    and beyond its own rank, and per fit the `lift` of `row_space` (leading dim n_layers).
    """
    n_layers, n_examples, d_model = features.shape
    n_fits = train.shape[0]
    rank = min(int(train.sum(dim=1).max()), d_model)
    reduced = torch.zeros(n_fits, n_layers, n_examples, rank, dtype=torch.float64)  # held-out rows stay 0
    lifts = []
    for fit in range(n_fits):
        rows = train[fit].nonzero()[:, 0]
        x, _, lift = row_space(standardised_rows(features, mean[fit], std[fit], rows))
        reduced[fit, :, rows, : x.shape[2]] = x
        lifts.append(lift)
    return reduced.reshape(n_fits * n_layers, n_examples, rank), lifts


# Both products below are skinny (k = a few option slots) batched GEMMs, bound by reading the features from
# memory. Computed transposed, as (k x n) @ (n x r), the features are read once in their stored layout rather
# than as the strided operand of (n x r) @ (r x k) or (r x n) @ (n x k); `benchmarks/bench_probe.py` times it.
def features_times(features: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """features (p, n, r) float32 @ coefficients (p, r, k) float64 -> (p, n, k) float64."""
    return torch.bmm(coefficients.float().transpose(1, 2), features.transpose(1, 2)).transpose(1, 2).double()


def features_transposed_times(features: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """features (p, n, r) float32 transposed @ residual (p, n, k) float64 -> (p, r, k) float64."""
    return torch.bmm(residual.float().transpose(1, 2), features).transpose(1, 2).double()


def lift_weights(
    features: torch.Tensor,
    train: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    lifts: list[torch.Tensor],
    z: torch.Tensor,
) -> torch.Tensor:
    """Weights W (n_fits, n_layers, d_model, k) on the standardised features, from row-space coefficients.

    The inverse of `reduce_fits`: z (n_fits, n_layers, rank, k) are the reduced problems' coefficients (only
    each fit's own rank is read), lifts and the other arguments as given to / returned by `reduce_fits`.
    """
    n_layers, n_examples, d_model = features.shape
    n_slots = z.shape[-1]
    w = features.new_empty(z.shape[0], n_layers, d_model, n_slots)
    for fit, lift in enumerate(lifts):
        coefficients = (lift @ z[fit, :, : lift.shape[2]]).to(features.dtype)
        if lift.shape[1] == d_model:  # V Z
            w[fit] = coefficients
        else:  # x^T (U / S) Z with x = (features[rows] - mean) / std, without rebuilding x
            # Coefficients scattered onto all rows (0 on held-out ones): the features are read, not copied.
            spread = coefficients.new_zeros(n_layers, n_examples, n_slots)
            spread[:, train[fit]] = coefficients
            raw = features_transposed_times(features, spread).to(features.dtype)  # (n_layers, d_model, k)
            w[fit] = (raw - mean[fit][..., None] * coefficients.sum(1, keepdim=True)) / std[fit][..., None]
    return w
