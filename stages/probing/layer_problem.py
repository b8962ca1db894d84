"""Every (fit, layer) logistic problem in its layer's shared basis (`stages.probing.reduction.LayerBases`).

All fits of a layer share its standardisation, so each fit's features are the rows of the layer's F it trains
on: problem (fit, layer) has coefficients Z (rank, k) and a bias b (k), data term mean CE(F Z + b) over its rows
and penalty l2 / 2 * ||Z||^2 (= ||W||^2, V being orthonormal). Same optimum as the full-dimensional problem.
One (n_rows, rank) @ (rank, n_fits * k) product per layer evaluates all of its fits; the eigenbasis makes the
data term's Hessian at the start (uniform probabilities) diagonal for the refit and nearly so for each fold,
which the preconditioner of `stages.probing.logistic` turns into about the identity.

float64 for the coefficients and everything after the products: near a separable optimum the float32 loss is
too coarse for the line search to tell steps apart. The products read (n_rows, rank) per layer every
evaluation and are most of its flops (measured near one core's float32 peak): float32 there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import torch

from stages.probing.logits import cross_entropy_and_residual
from stages.probing.reduction import LayerBases, transposed_times


@dataclass(frozen=True)
class LayerProblem:
    """Problem p = fit * n_layers + layer. The solver's tensors are per problem, (n_problems, ...); the
    evaluation works per layer, (n_layers, n_fits, k, n_rows), where a layer's fits are the rows of one product
    (`by_layer` and `by_problem` convert coefficients, (n_layers, m, n_fits, k))."""

    features: torch.Tensor  # (n_layers, n_rows, rank) float32 F, 0 beyond each layer's rank
    weights: torch.Tensor  # (n_problems, n_rows) float64: 1 / n_train on the fit's training rows, 0 elsewhere
    gold: torch.Tensor  # (n_rows, k) float64 one-hot answers
    invalid: torch.Tensor  # (n_rows, k) bool: slots an example does not have
    l2: float

    @cached_property
    def squares(self) -> torch.Tensor:
        """F**2, for the diagonal preconditioner."""
        return self.features**2

    @property
    def n_fits(self) -> int:
        return self.weights.shape[0] // self.features.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """(n_problems, rank): each problem's coefficients are (rank, k)."""
        return self.weights.shape[0], self.features.shape[2]

    @property
    def active(self) -> torch.Tensor:
        """(n_problems, rank) bool: directions inside the layer's rank (the rest is padding, kept at 0)."""
        return (self.squares.amax(1) > 0).repeat(self.n_fits, 1)

    def covering(self, problems: torch.Tensor) -> tuple[LayerProblem, torch.Tensor, torch.Tensor]:
        """The problems of the layers some of `problems` (indices) belong to: that problem (its layers' every fit:
        they share the layer's products), its problems as indices into these, and where `problems` are in it."""
        n_layers = self.features.shape[0]
        layers = torch.unique(problems % n_layers)  # sorted, so `covered` is too
        covered = (torch.arange(self.n_fits, device=layers.device)[:, None] * n_layers + layers).flatten()
        weights = self.weights.view(self.n_fits, n_layers, -1)[:, layers].flatten(0, 1)
        return (
            replace(self, features=self.features[layers], weights=weights),
            covered,
            torch.searchsorted(covered, problems),
        )

    def by_layer(self, per_problem: torch.Tensor) -> torch.Tensor:
        """(n_problems, m, k) -> (n_layers, m, n_fits, k) float32."""
        return per_problem.reshape(self.n_fits, -1, *per_problem.shape[1:]).permute(1, 2, 0, 3).float()

    def by_problem(self, per_layer: torch.Tensor) -> torch.Tensor:
        """The inverse of `by_layer`: (n_layers, m, n_fits, k) -> (n_problems, m, k) float64."""
        return per_layer.permute(2, 0, 1, 3).reshape(self.shape[0], *per_layer.shape[1:2], -1).double()

    @cached_property
    def invalid_by_slot(self) -> torch.Tensor:
        """(k, n_rows): `invalid` in the evaluation's layout, slots before rows."""
        return self.invalid.T.contiguous()

    @cached_property
    def gold_by_slot(self) -> torch.Tensor:
        """(k, n_rows): `gold` in the evaluation's layout."""
        return self.gold.T.contiguous()

    def layer_logits(self, z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(n_layers, n_fits, k, n_rows) float64, -inf on invalid slots.

        Slots before rows, the layout of the product computed transposed, (k x r) @ (r x n): F is read in its
        stored layout (measured 1.3x faster) and every reduction over the slots is element by element
        (`cross_entropy_and_residual`)."""
        per_layer = self.by_layer(z)
        n_layers, _, n_fits, k = per_layer.shape
        products = torch.bmm(per_layer.flatten(2).transpose(1, 2), self.features.transpose(1, 2))
        products = products.view(n_layers, n_fits, k, -1).double()
        bias = b.view(n_fits, n_layers, k).transpose(0, 1)
        return (products + bias[..., None]).masked_fill_(self.invalid_by_slot, float("-inf"))

    def logits(self, z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(n_problems, n_rows, k) float64, -inf on invalid slots; z (n_problems, rank, k), b (n_problems, k)."""
        per_layer = self.layer_logits(z, b)
        return per_layer.permute(1, 0, 3, 2).reshape(self.shape[0], -1, per_layer.shape[2])

    def loss_and_gradient(self, z: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-problem mean CE + l2 / 2 * ||Z||^2 (n_problems,) and its gradients in z and in b."""
        n_problems, rank = self.shape
        n_layers, n_fits, k = self.features.shape[0], self.n_fits, z.shape[2]
        cross_entropy, residual = cross_entropy_and_residual(self.layer_logits(z, b), self.gold_by_slot, dim=-2)
        weights = self.weights.view(n_fits, n_layers, -1).transpose(0, 1)  # (n_layers, n_fits, n_rows)
        loss = (cross_entropy * weights).sum(-1).T.reshape(-1) + self.l2 / 2 * (z**2).sum((1, 2))
        residual *= weights[:, :, None]  # dCE/dlogits of the weighted mean, (n_layers, n_fits, k, n_rows)
        grad_z = torch.bmm(residual.float().flatten(1, 2), self.features)  # (n_layers, n_fits * k, rank)
        grad_z = grad_z.view(n_layers, n_fits, k, rank).permute(1, 0, 3, 2).reshape(n_problems, rank, k)
        grad_b = residual.sum(-1).transpose(0, 1).reshape(-1, k)
        return loss, grad_z.double() + self.l2 * z, grad_b

    def curvature_diagonal(self, along: torch.Tensor) -> torch.Tensor:
        """(n_problems, rank, k): the data term's Hessian diagonal, given each example's weighted curvature along
        each slot direction, along (n_problems, n_rows, k)."""
        per_layer = self.by_layer(along)
        products = transposed_times(self.squares, per_layer.flatten(2))
        return self.by_problem(products.view(*per_layer.shape[:1], -1, *per_layer.shape[2:]))


def layer_problem(bases: LayerBases, answers: torch.Tensor, valid: torch.Tensor, train: torch.Tensor, l2: float):
    """The problems of every (fit, layer) on the layers' bases; answers (n_examples,), valid (n_examples, k),
    train (n_fits, n_examples) bool."""
    n_layers = bases.features.shape[0]
    weights = train[:, bases.rows].double()
    weights = (weights / weights.sum(1, keepdim=True)).repeat_interleave(n_layers, 0)  # (n_problems, n_rows)
    rows_answers = answers[bases.rows]
    return LayerProblem(
        features=bases.features,
        weights=weights,
        gold=torch.nn.functional.one_hot(rows_answers, valid.shape[1]).double(),
        invalid=~valid[bases.rows],
        l2=l2,
    )
