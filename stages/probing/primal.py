"""The primal formulation of the logistic probes: W (d_model, k) per problem, for when n_train >= ~d_model.

Where examples outnumber dimensions the row-space reduction saves nothing and its per-fit n x n
eigendecompositions cost more than the whole fit. Here every fit of a layer shares one basis instead: the
eigenvectors V of that layer's covariance over all training rows (one d x d eigendecomposition per layer, not
per fit). The unknowns are Z = V^T W, so the penalty stays ||Z||^2 and the data term's Hessian at the start is
close to diagonal for every fold (each fold's covariance differs from the layer's by the rows it holds out); the
diagonal preconditioner of `stages.probing.logistic` absorbs the rest. The basis only preconditions: the loss
and gradient are those of each fit's own standardised features, so the optimum is exact.

The fits of a layer also share the features: each fit's standardisation is an affine map of the layer's
(`ratio` and `offset` below), so one (n, d) @ (d, n_fits * k) product per layer evaluates all of its fits.
float32 for those products (as in the row-space problem) and for the basis, which only has to precondition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stages.probing.logits import cross_entropy_and_residual
from stages.probing.reduction import training_stats


@dataclass(frozen=True)
class PrimalProblem:
    """Every (fit, layer) problem in its layer's eigenbasis: Z (d_model, k) and b (k); problem p = fit * L + layer.

    The solver's tensors are per problem, (n_problems, ...); the evaluation works per layer, (n_layers, ...,
    n_fits, k), where a layer's fits are the columns of one matrix product.
    """

    features: torch.Tensor  # (n_layers, n_rows, d_model) float32, standardised with the layer's training rows
    basis: torch.Tensor  # (n_layers, d_model, d_model) float32 V: W = V Z
    squares: torch.Tensor  # (n_layers, n_rows, d_model) float32 (features V)**2, for the diagonal preconditioner
    ratio: torch.Tensor  # (n_layers, d_model, n_fits, 1) float32: a fit's features = features * ratio - offset
    offset: torch.Tensor  # (n_layers, d_model, n_fits) float32
    weights: torch.Tensor  # (n_problems, n_rows) float64: 1 / n_train on the fit's training rows, 0 elsewhere
    gold: torch.Tensor  # (n_rows, k) float64 one-hot answers
    invalid: torch.Tensor  # (n_rows, k) bool: slots an example does not have
    l2: float

    @property
    def shape(self) -> tuple[int, int]:
        """(n_problems, d_model): each problem's coefficients are (d_model, k)."""
        return self.weights.shape[0], self.basis.shape[1]

    @property
    def active(self) -> torch.Tensor:
        """(n_problems, d_model) bool: every direction moves (the penalty alone bounds those without data)."""
        return torch.ones(self.shape, dtype=torch.bool)

    def by_layer(self, per_problem: torch.Tensor) -> torch.Tensor:
        """(n_problems, m, k) -> (n_layers, m, n_fits, k) float32."""
        n_layers, n_fits = self.basis.shape[0], self.ratio.shape[2]
        return per_problem.reshape(n_fits, n_layers, *per_problem.shape[1:]).permute(1, 2, 0, 3).float()

    def by_problem(self, per_layer: torch.Tensor) -> torch.Tensor:
        """The inverse of `by_layer`: (n_layers, m, n_fits, k) -> (n_problems, m, k) float64."""
        return per_layer.permute(2, 0, 1, 3).reshape(self.shape[0], *per_layer.shape[1:2], -1).double()

    def layer_weights(self, z: torch.Tensor) -> torch.Tensor:
        """(n_layers, d_model, n_fits, k) float32 W = V Z on each fit's standardised features."""
        per_layer = self.by_layer(z)
        return torch.bmm(self.basis, per_layer.flatten(2)).view(per_layer.shape)

    def weights_of(self, z: torch.Tensor) -> torch.Tensor:
        """(n_problems, d_model, k) float64 W = V Z."""
        return self.by_problem(self.layer_weights(z))

    def layer_logits(self, z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(n_layers, n_rows, n_fits, k) float64, -inf on invalid slots."""
        w = self.layer_weights(z)
        n_layers, d_model, n_fits, k = w.shape
        shift = torch.einsum("ldf,ldfk->lfk", self.offset, w).double()  # (n_layers, n_fits, k)
        scaled = (w * self.ratio).view(n_layers, d_model, -1)  # on the layer's features instead of the fit's
        products = torch.bmm(self.features, scaled).view(n_layers, -1, n_fits, k).double()
        bias = b.view(n_fits, n_layers, k).transpose(0, 1) - shift
        return (products + bias[:, None]).masked_fill_(self.invalid[None, :, None], float("-inf"))

    def logits(self, z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(n_problems, n_rows, k) float64, -inf on invalid slots; z (n_problems, d_model, k), b (n_problems, k)."""
        return self.by_problem(self.layer_logits(z, b))

    def loss_and_gradient(self, z: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-problem mean CE + l2 / 2 * ||Z||^2 (n_problems,) and its gradients in z and in b.

        ||Z|| = ||W|| as V is orthonormal (to float32 precision, which moves the objective by ~1e-7 relative).
        """
        n_layers, d_model, n_fits, _ = self.ratio.shape
        cross_entropy, residual = cross_entropy_and_residual(self.layer_logits(z, b), self.gold[None, :, None])
        weights = self.weights.view(n_fits, n_layers, -1).permute(1, 2, 0)  # (n_layers, n_rows, n_fits)
        loss = (cross_entropy * weights).sum(1).T.reshape(-1) + self.l2 / 2 * (z**2).sum((1, 2))
        residual *= weights[..., None]  # dCE/dlogits of the weighted mean, (n_layers, n_rows, n_fits, k)
        grad_b = residual.sum(1)  # (n_layers, n_fits, k)
        layer_grad = transposed_times(self.features, residual.float().flatten(2)).reshape(n_layers, d_model, n_fits, -1)
        grad_w = layer_grad * self.ratio - self.offset[..., None] * grad_b[:, None].float()
        grad_z = transposed_times(self.basis, grad_w.flatten(2)).reshape(grad_w.shape)
        return loss, self.by_problem(grad_z) + self.l2 * z, grad_b.transpose(0, 1).reshape(-1, grad_b.shape[2])

    def curvature_diagonal(self, along: torch.Tensor) -> torch.Tensor:
        """(n_problems, d_model, k): the data term's Hessian diagonal in the basis, for each example's weighted
        curvature along each slot direction, along (n_problems, n_rows, k). Uses the layer's standardisation
        for every fit: an estimate, which is all a preconditioner needs."""
        per_layer = self.by_layer(along)
        return self.by_problem(
            transposed_times(self.squares, per_layer.flatten(2)).view(*per_layer.shape[:1], -1, *per_layer.shape[2:])
        )


def transposed_times(matrix: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """matrix (L, n, m) transposed @ columns (L, n, c) -> (L, m, c), computed as (columns^T matrix)^T: reads the
    large matrix in its stored layout (see `stages.probing.reduction.features_times`)."""
    return torch.bmm(columns.transpose(1, 2), matrix).transpose(1, 2)


def layer_basis(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvectors of each layer's covariance (n_layers, d_model, d_model) and the squared projections
    (n_layers, n_rows, d_model) of the rows on them; features (n_layers, n_rows, d_model) standardised."""
    basis = torch.empty(features.shape[0], features.shape[2], features.shape[2])
    squares = torch.empty_like(features)
    for layer, x in enumerate(features):  # one layer at a time: temporaries stay (d_model, d_model)
        basis[layer] = torch.linalg.eigh(x.T @ x)[1]
        squares[layer] = (x @ basis[layer]).square_()
    return basis, squares


def primal_problem(
    features: torch.Tensor,
    answers: torch.Tensor,
    valid: torch.Tensor,
    train: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    l2: float,
) -> PrimalProblem:
    """The primal problems of every (fit, layer), restricted to the rows some fit trains on.

    features (n_layers, n_examples, d_model); train (n_fits, n_examples) bool; mean, std of each fit from
    `training_stats` (n_fits, n_layers, d_model).
    """
    rows = train.any(0).nonzero()[:, 0]
    layer_mean, layer_std = (stat[0] for stat in training_stats(features, train.any(0, keepdim=True)))
    standardised = features.index_select(1, rows).sub_(layer_mean[:, None]).div_(layer_std[:, None])
    basis, squares = layer_basis(standardised)
    n_layers = features.shape[0]
    weights = train[:, rows].double()
    weights = (weights / weights.sum(1, keepdim=True)).repeat_interleave(n_layers, 0)  # (n_problems, n_rows)
    return PrimalProblem(
        features=standardised,
        basis=basis,
        squares=squares,
        ratio=(layer_std / std).permute(1, 2, 0)[..., None],
        offset=((mean - layer_mean) / std).permute(1, 2, 0).contiguous(),
        weights=weights,
        gold=torch.nn.functional.one_hot(answers[rows], valid.shape[1]).double(),
        invalid=~valid[rows],
        l2=l2,
    )
