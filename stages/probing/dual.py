"""The row-space (dual) formulation of the logistic probes: each fit's problem in its own training rows' span.

In the reduced basis (`stages.probing.reduction.row_space`, one eigendecomposition of each fit's n x n Gram
matrix) the data term's Hessian at the start (uniform probabilities) is exactly diag(S^2 / n_train) (x) A, so the
diagonal preconditioner of `stages.probing.logistic` makes it the identity. Same optimum as the full-dimensional
problem. Cheap while n_train is small next to d_model: the iterations run on (n_train, rank) reduced features.

float64 for the reduced problem: it is small, and near a separable optimum the float32 loss is too coarse for
the line search to tell steps apart (the fit stalled a few % away from the optimum's weights). The products
with the reduced features read (n_problems, n, rank) every evaluation and are memory-bound: float32 there,
float64 for the small (n, k) logits and everything after.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stages.probing.logits import cross_entropy_and_residual
from stages.probing.reduction import features_times, features_transposed_times, lift_weights, reduce_fits


@dataclass(frozen=True)
class RowSpaceProblem:
    """Every (fit, layer) logistic problem in row-space coordinates: Z (rank, k) and b (k) per problem."""

    features: torch.Tensor  # (n_problems, n_examples, rank) float32 U S, 0 on held-out rows
    squares: torch.Tensor  # features**2: the preconditioner only needs a rough diagonal
    weights: torch.Tensor  # (n_problems, n_examples) float64: 1 / n_train on training rows, 0 elsewhere
    gold: torch.Tensor  # (n_examples, k) float64 one-hot answers
    invalid: torch.Tensor  # (n_examples, k) bool: slots an example does not have
    l2: float

    @property
    def shape(self) -> tuple[int, int]:
        """(n_problems, rank): each problem's coefficients are (rank, k)."""
        return self.features.shape[0], self.features.shape[2]

    @property
    def active(self) -> torch.Tensor:
        """(n_problems, rank) bool: directions inside each problem's own rank (the rest is padding, kept at 0)."""
        return self.squares.amax(1) > 0

    def logits(self, z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(n_problems, n_examples, k) float64, -inf on invalid slots; z (n_problems, rank, k), b (n_problems, k)."""
        return (features_times(self.features, z) + b[:, None, :]).masked_fill(self.invalid, float("-inf"))

    def loss_and_gradient(self, z: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-problem mean CE + l2 / 2 * ||Z||^2 (n_problems,) and its gradients in z and in b."""
        cross_entropy, residual = cross_entropy_and_residual(self.logits(z, b), self.gold)  # (n_problems, n(, k))
        loss = (cross_entropy * self.weights).sum(1) + self.l2 / 2 * (z**2).sum((1, 2))
        residual *= self.weights[:, :, None]  # dCE/dlogits of the weighted mean
        grad_z = features_transposed_times(self.features, residual) + self.l2 * z
        return loss, grad_z, residual.sum(1)

    def curvature_diagonal(self, along: torch.Tensor) -> torch.Tensor:
        """(n_problems, rank, k): the data term's Hessian diagonal, given each example's weighted curvature along
        each slot direction, along (n_problems, n_examples, k)."""
        return features_transposed_times(self.squares, along)


def row_space_problem(
    features: torch.Tensor,
    answers: torch.Tensor,
    valid: torch.Tensor,
    train: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    l2: float,
) -> tuple[RowSpaceProblem, list[torch.Tensor]]:
    """The row-space problems of every (fit, layer) and each fit's lift back to d_model (see `reduce_fits`)."""
    reduced, lifts = reduce_fits(features, train, mean, std)
    narrow = reduced.float()  # see the module docstring: float32 for the memory-bound products
    del reduced
    n_layers = features.shape[0]
    weights = (train.double() / train.sum(dim=1)[:, None]).repeat_interleave(n_layers, 0)  # (n_problems, n)
    gold = torch.nn.functional.one_hot(answers, valid.shape[1]).double()
    problem = RowSpaceProblem(features=narrow, squares=narrow**2, weights=weights, gold=gold, invalid=~valid, l2=l2)
    return problem, lifts


def dual_weights(
    features: torch.Tensor,
    train: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    lifts: list[torch.Tensor],
    z: torch.Tensor,
) -> torch.Tensor:
    """(n_fits, n_layers, d_model, k) weights on the standardised features from z (n_problems, rank, k)."""
    n_fits, n_layers = train.shape[0], features.shape[0]
    return lift_weights(features, train, mean, std, lifts, z.reshape(n_fits, n_layers, *z.shape[1:]))
