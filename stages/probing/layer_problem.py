"""Every (fit, layer) logistic problem in its layer's shared basis (`stages.probing.reduction.LayerBases`).

All fits of a layer share its standardisation, so each fit's features are the rows of the layer's F it trains
on: problem (fit, layer) has coefficients Z (rank, k) and a bias b (k), data term mean CE(F Z + b) over its rows
and penalty l2 / 2 * ||Z||^2 (= ||W||^2, V being orthonormal). Same optimum as the full-dimensional problem.
The bias is one more feature, constant 1: a problem's coefficients are c = [Z; b]^T (k, rank + 1), slots
first, the layout of the products, (k x (rank + 1)) @ ((rank + 1) x n). One product per layer evaluates all of
its fits, bias included; the eigenbasis makes the data term's Hessian at the start (uniform probabilities)
diagonal for the refit and nearly so for each fold, which the preconditioner of `stages.probing.logistic`
turns into about the identity.

float64 for the coefficients and everything after the products: near a separable optimum the float32 loss is
too coarse for the line search to tell steps apart. The products read (n_rows, rank + 1) per layer every
evaluation and are most of its flops (measured near one core's float32 peak): float32 there, the bias too
(its logit is rounded like the others, to float32's 6e-8 relative).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import torch

from stages.probing.logits import cross_entropy_and_residual
from stages.probing.reduction import LayerBases


@dataclass(frozen=True)
class LayerProblem:
    """Problem p = fit * n_layers + layer. The solver's tensors are per problem, (n_problems, k, ...); the
    evaluation works per layer, (n_layers, n_fits * k, ...), a layer's fits the rows of one product (`by_layer`
    and `by_problem` convert)."""

    features: torch.Tensor  # (n_layers, n_rows, rank + 1) float32 [F, 1], F 0 beyond each layer's rank
    weights: torch.Tensor  # (n_problems, n_rows) float64: 1 / n_train on the fit's training rows, 0 elsewhere
    gold: torch.Tensor  # (n_rows, k) float64 one-hot answers
    invalid: torch.Tensor  # (n_rows, k) bool: slots an example does not have
    l2: float

    @cached_property
    def squares(self) -> torch.Tensor:
        """features**2, for the diagonal preconditioner."""
        return self.features**2

    @property
    def n_fits(self) -> int:
        return self.weights.shape[0] // self.features.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_problems, k, rank + 1): each problem's coefficients, the bias last."""
        return self.weights.shape[0], self.invalid.shape[1], self.features.shape[2]

    @property
    def active(self) -> torch.Tensor:
        """(n_problems, rank + 1) bool: directions inside the layer's rank, and the bias (the rest is padding,
        kept at 0)."""
        return (self.squares.amax(1) > 0).repeat(self.n_fits, 1)

    @cached_property
    def any_invalid(self) -> bool:
        return bool(self.invalid.any())

    @cached_property
    def invalid_by_slot(self) -> torch.Tensor:
        """(k, n_rows): `invalid` in the evaluation's layout, slots before rows."""
        return self.invalid.T.contiguous()

    @cached_property
    def gold_by_slot(self) -> torch.Tensor:
        """(k, n_rows): `gold` in the evaluation's layout."""
        return self.gold.T.contiguous()

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
        """(n_problems, k, m) -> (n_layers, n_fits * k, m) float32, contiguous (one copy)."""
        _, k, m = per_problem.shape
        n_layers = self.features.shape[0]
        out = per_problem.new_empty(n_layers, self.n_fits, k, m, dtype=torch.float32)
        out.copy_(per_problem.view(self.n_fits, n_layers, k, m).transpose(0, 1))
        return out.view(n_layers, -1, m)

    def by_problem(self, per_layer: torch.Tensor) -> torch.Tensor:
        """The inverse of `by_layer`: (n_layers, n_fits * k, m) -> (n_problems, k, m) float64."""
        n_layers, _, m = per_layer.shape
        out = per_layer.new_empty(self.n_fits, n_layers, self.shape[1], m, dtype=torch.float64)
        out.copy_(per_layer.view(n_layers, self.n_fits, -1, m).transpose(0, 1))
        return out.view(self.shape[0], -1, m)

    def layer_logits(self, c: torch.Tensor) -> torch.Tensor:
        """(n_layers, n_fits, k, n_rows) float64, -inf on invalid slots; c (n_problems, k, rank + 1).

        Slots before rows, the product's layout: F is read in its stored layout (measured 1.3x faster than
        computing the transpose) and every reduction over the slots is element by element
        (`cross_entropy_and_residual`)."""
        products = torch.bmm(self.by_layer(c), self.features.transpose(1, 2))  # (n_layers, n_fits * k, n_rows)
        logits = products.view(products.shape[0], self.n_fits, -1, products.shape[2]).double()
        return logits.masked_fill_(self.invalid_by_slot, float("-inf")) if self.any_invalid else logits

    def logits(self, c: torch.Tensor) -> torch.Tensor:
        """(n_problems, n_rows, k) float64, -inf on invalid slots."""
        per_layer = self.layer_logits(c)
        return per_layer.permute(1, 0, 3, 2).reshape(self.shape[0], -1, per_layer.shape[2])

    def loss_and_gradient(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-problem mean CE + l2 / 2 * ||Z||^2 (n_problems,) and its gradient in c (n_problems, k, rank + 1)."""
        n_layers, n_fits = self.features.shape[0], self.n_fits
        cross_entropy, residual = cross_entropy_and_residual(self.layer_logits(c), self.gold_by_slot, dim=-2)
        weights = self.weights.view(n_fits, n_layers, -1).transpose(0, 1)  # (n_layers, n_fits, n_rows)
        z = c[..., :-1]
        loss = (cross_entropy * weights).sum(-1).T.reshape(-1) + self.l2 / 2 * (z**2).sum((1, 2))
        residual *= weights[:, :, None]  # dCE/dlogits of the weighted mean, (n_layers, n_fits, k, n_rows)
        gradient = self.by_problem(torch.bmm(residual.flatten(1, 2).float(), self.features))
        gradient[..., :-1].add_(z, alpha=self.l2)
        return loss, gradient

    def curvature_diagonal(self, along: torch.Tensor) -> torch.Tensor:
        """(n_problems, k, rank + 1): the data term's Hessian diagonal, given each example's weighted curvature
        along each slot direction, along (n_problems, n_rows, k)."""
        return self.by_problem(torch.bmm(self.by_layer(along.transpose(1, 2)), self.squares))


def layer_problem(bases: LayerBases, answers: torch.Tensor, valid: torch.Tensor, train: torch.Tensor, l2: float):
    """The problems of every (fit, layer) on the layers' bases; answers (n_examples,), valid (n_examples, k),
    train (n_fits, n_examples) bool."""
    n_layers = bases.features.shape[0]
    weights = train[:, bases.rows].double()
    weights = (weights / weights.sum(1, keepdim=True)).repeat_interleave(n_layers, 0)  # (n_problems, n_rows)
    rows_answers = answers[bases.rows]
    ones = bases.features.new_ones(*bases.features.shape[:2], 1)  # the bias's feature
    return LayerProblem(
        features=torch.cat([bases.features, ones], dim=2),
        weights=weights,
        gold=torch.nn.functional.one_hot(rows_answers, valid.shape[1]).double(),
        invalid=~valid[bases.rows],
        l2=l2,
    )
