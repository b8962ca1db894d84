"""Multinomial L2 logistic probes, solved exactly in one of two formulations, preconditioned per direction.

Both formulations write each (fit, layer) problem in an orthonormal basis shared by the layer's fits, where
the data term's Hessian at the start (uniform probabilities) is diagonal, or close to it, times A, the
(n_slots, n_slots) mean softmax curvature: the row space of the layer's training rows (dual) or the eigenbasis
of its covariance (primal), see `stages.probing.reduction` and `stages.probing.layer_problem`. The change of
variables Z = Yhat * (diagonal + l2)^(-1/2) in A's eigenbasis makes the start's Hessian (about) the identity.
As the fit grows confident the curvature shrinks unevenly, so the diagonal is re-estimated at the current point
after PRECONDITIONER_ROUNDS evaluations (L-BFGS goes on in the new variables, its memory mapped into them): a
few dozen steps instead of hundreds. Same objective, same stopping rule and same optimum in both; `formulation`
picks the cheaper one by shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import torch

from stages.probing.layer_problem import layer_problem
from stages.probing.lbfgs import Objective, State, Stationarity, batched_lbfgs, curvature_pair
from stages.probing.reduction import layer_bases, shared_stats

# L-BFGS evaluations between refreshes of the diagonal preconditioner (softmax curvature shrinks as the fit
# becomes confident, so the start's exact preconditioner goes stale); the last round runs to max_iter. Without
# refreshes the benchmark's fits hit 500 evaluations; with these, 22-41 (`benchmarks/bench_probe.py` shapes).
PRECONDITIONER_ROUNDS = (4, 8, 1_000_000)
FORMULATIONS = ("auto", "dual", "primal")


class Problem(Protocol):
    """What the solver needs of a formulation: every (fit, layer) problem, coefficients c (k, rank + 1), the
    last column the bias (`stages.probing.layer_problem`)."""

    @property
    def weights(self) -> torch.Tensor: ...  # (n_problems, n_rows) float64: 1 / n_train on training rows, else 0
    @property
    def invalid(self) -> torch.Tensor: ...  # (n_rows, k) bool: slots an example does not have
    @property
    def l2(self) -> float: ...
    @property
    def shape(self) -> tuple[int, int, int]: ...  # (n_problems, k, rank + 1)
    @property
    def active(self) -> torch.Tensor: ...  # (n_problems, rank + 1) bool: directions that may move
    def covering(self, problems: torch.Tensor) -> tuple[Problem, torch.Tensor, torch.Tensor]: ...
    def logits(self, c: torch.Tensor) -> torch.Tensor: ...
    def loss_and_gradient(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def curvature_diagonal(self, along: torch.Tensor) -> torch.Tensor: ...


def preconditioner(probs: torch.Tensor, problem: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal Hessian estimate of every problem at the current probabilities, in the mean curvature's basis.

    probs: (n_problems, n_rows, k). Returns the slot rotation R (n_problems, k, k) and the scale s (n_problems,
    k, rank + 1): c = R (yhat * s). At uniform probabilities this is the exact Hessian of the row-space problem
    (U is orthonormal on the training rows), and of the primal refit.
    """
    # Each example's softmax curvature is diag(p) - p p^T; never formed as (n_problems, n, k, k) (the closed
    # forms below took 0.4 ms against 2.8 at 96 problems x 128 rows, three times a fit).
    weights = problem.weights
    weighted = probs * weights[..., None]
    mean_curvature = torch.diag_embed(weighted.sum(1)) - weighted.transpose(1, 2) @ probs  # (n_problems, k, k)
    slot_curvature, rotation = torch.linalg.eigh(mean_curvature)  # (n_problems, k), (n_problems, k, k)
    # Each example's curvature along each rotated slot direction r: r^T (diag(p) - p p^T) r = p . r^2 - (p . r)^2.
    along = probs @ rotation.square() - (probs @ rotation).square_()  # (n_problems, n, k)
    diagonal = problem.curvature_diagonal(along * weights[..., None])  # (n_problems, k, rank + 1)
    scale = (diagonal + problem.l2).rsqrt() * problem.active[:, None, :]  # dropped directions stay 0
    # The bias (unpenalised): its curvature is the slot curvature itself, 0 along shifts the softmax ignores.
    flat_direction = slot_curvature <= 1e-6 * slot_curvature[:, -1:].clamp_min(1e-30)
    scale[..., -1] = slot_curvature.clamp_min(1e-30).rsqrt().masked_fill(flat_direction, 0.0)
    return rotation, scale


@dataclass(frozen=True)
class Preconditioned:
    """The reduced problems in one round's preconditioned variables yhat: c = R (yhat * s), per problem.

    Flat variables per problem (what `batched_lbfgs` moves): yhat (k, rank + 1), flattened. Its bound methods
    `objective`, `stationarity` and `restricted` are what the solver calls.
    """

    problem: Problem
    rotation: torch.Tensor  # (n_problems, k, k) R: eigenbasis of the mean softmax curvature
    scale: torch.Tensor  # (n_problems, k, rank + 1) s, 0 on dropped directions and shifts the softmax ignores

    @classmethod
    def at(cls, problem: Problem, probs: torch.Tensor) -> Preconditioned:
        """Variables preconditioned at the current probabilities probs (n_problems, n_examples, k)."""
        return cls(problem, *preconditioner(probs, problem))

    @cached_property
    def inverse_scale(self) -> torch.Tensor:
        """1 / s, 0 on frozen directions (computed once: the stopping test divides by it every evaluation)."""
        return self.scale.reciprocal().masked_fill_(self.scale == 0, 0.0)

    def pack(self, c: torch.Tensor) -> torch.Tensor:
        """The coefficients c (n_problems, k, rank + 1) in these variables (0 along frozen directions), flat."""
        return (self.rotation.transpose(1, 2) @ c * self.inverse_scale).flatten(1)

    def unpack(self, flat: torch.Tensor) -> torch.Tensor:
        """The coefficients c (n_problems, k, rank + 1) of flat variables."""
        return self.rotation @ (flat.view(self.scale.shape) * self.scale)

    def covector(self, gradient: torch.Tensor) -> torch.Tensor:
        """A gradient in c (n_problems, k, rank + 1) in these variables, flat: s * (R^T gradient)."""
        return (self.rotation.transpose(1, 2) @ gradient * self.scale).flatten(1)

    def carry(self, state: State, into: Preconditioned) -> State:
        """The L-BFGS state of a run in these variables, in the variables `into`: the point and its steps map as
        vectors, gradients and their changes as covectors, so every pair keeps its curvature s . y.

        Both maps composed, for all of the run's vectors at once: a vector maps as (R'^T R (yhat * s)) / s' and a
        covector as (R'^T R (g / s)) * s', one product per problem for all of them (mapping each through unpack
        and pack was 10% of a small fit's solve)."""
        n_problems, k, columns = self.scale.shape
        composed = into.rotation.transpose(1, 2) @ self.rotation  # (n_problems, k, k)

        def mapped(flats: list[torch.Tensor], before: torch.Tensor, after: torch.Tensor) -> list[torch.Tensor]:
            stacked = torch.cat([flat.view(n_problems, k, columns) * before for flat in flats], dim=2)
            products = (composed @ stacked).view(n_problems, k, len(flats), columns) * after[:, :, None]
            return [vector.reshape(n_problems, -1) for vector in products.unbind(2)]

        vectors = mapped([state.x, *(s for s, _, _ in state.pairs)], self.scale, into.inverse_scale)
        covectors = mapped([state.gradient, *(y for _, y, _ in state.pairs)], self.inverse_scale, into.scale)
        steps = zip(vectors[1:], covectors[1:], state.pairs, strict=True)
        pairs = [curvature_pair(s, y, rho > 0) for s, y, (_, _, rho) in steps]
        return State(vectors[0], state.loss, covectors[0], pairs)

    def objective(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-problem loss (n_problems,) and its gradient in these variables (n_problems, k * (rank + 1))."""
        loss, gradient = self.problem.loss_and_gradient(self.unpack(flat))
        return loss, self.covector(gradient)

    @cached_property
    def flat_inverse_scale(self) -> torch.Tensor:
        return self.inverse_scale.flatten(1)

    def stationarity(self, gradient: torch.Tensor) -> torch.Tensor:
        """Norm of the gradient in the original (W, b) coordinates: bounds sklearn's largest-entry `tol`."""
        return (gradient * self.flat_inverse_scale).norm(dim=1)

    def restricted(self, problems: torch.Tensor) -> tuple[Objective, Stationarity]:
        """`objective` and `stationarity` of some problems alone (indices; `batched_lbfgs`'s `restrict`): evaluated
        on their layers only, the layers' other fits at 0 alongside (they share the layer's products)."""
        problem, covered, position = self.problem.covering(problems)
        inner = Preconditioned(problem, self.rotation[covered], self.scale[covered])

        def objective(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            padded = flat.new_zeros(covered.numel(), flat.shape[1]).index_copy_(0, position, flat)
            loss, gradient = inner.objective(padded)
            return loss[position], gradient[position]

        inverse_scale = self.flat_inverse_scale[problems]
        return objective, lambda gradient: (gradient * inverse_scale).norm(dim=1)


def solve(problem: Problem, max_iter: int, tolerance: float) -> torch.Tensor:
    """The coefficients c (n_problems, k, rank + 1) minimising each problem, from zero.

    L-BFGS in preconditioned variables, the preconditioner refreshed at the current point after each of
    PRECONDITIONER_ROUNDS; the run goes on in the new variables with its curvature pairs mapped into them (the
    change of variables is linear), so a refresh costs no evaluation and loses no memory. `max_iter` bounds the
    evaluations of all rounds together.
    """
    valid = ~problem.invalid
    c = torch.zeros(problem.shape, dtype=torch.float64)
    probs = (valid.double() / valid.sum(1, keepdim=True)).expand(c.shape[0], -1, -1)  # uniform at the start
    variables = Preconditioned.at(problem, probs)
    start: torch.Tensor | State = variables.pack(c)
    done = 0
    for budget in PRECONDITIONER_ROUNDS:
        budget = min(budget, max_iter - done)
        state = batched_lbfgs(
            variables.objective,
            start,
            budget,
            tolerance,
            stationarity=variables.stationarity,
            unit_first_step=True,
            restrict=variables.restricted,
        )
        done += budget
        c = variables.unpack(state.x)
        if done >= max_iter:
            break
        refreshed = Preconditioned.at(problem, torch.softmax(problem.logits(c), dim=-1))
        start, variables = variables.carry(state, refreshed), refreshed
    return c


def fit_logistic(
    features: torch.Tensor,
    answers: torch.Tensor,
    valid: torch.Tensor,
    train: torch.Tensor,
    *,
    l2: float,
    max_iter: int,
    tolerance: float,
    formulation: str = "auto",
) -> dict[str, torch.Tensor]:
    """Multinomial L2 logistic probe per (training mask, layer); arguments and result as `fit_probes`.

    Each problem minimises its training rows' mean cross-entropy + l2 / 2 * ||W||^2 on features standardised
    with the statistics of all training rows (`stages.probing.reduction.shared_stats`). Stops when the
    gradient's 2-norm in (W, b) coordinates is below `tolerance` (stricter than sklearn's largest-entry test
    with the same tol). `formulation`: dual, primal, or auto (`choose_formulation`).
    """
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation={formulation!r}: expected one of {FORMULATIONS}")
    n_fits, n_slots = train.shape[0], valid.shape[1]
    rows = train.any(0).nonzero()[:, 0]
    if formulation == "auto":
        formulation = choose_formulation(rows.numel(), features.shape[2])
    mean, std = shared_stats(features, train)  # (n_fits, n_layers, d_model), every fit alike
    bases = layer_bases(features, rows, mean[0], std[0], by_rows=formulation == "dual")
    c = solve(layer_problem(bases, answers, valid, train, l2), max_iter, tolerance)
    n_layers, rank = bases.features.shape[0], bases.features.shape[2]
    z, b = c[..., :-1].transpose(1, 2), c[..., -1]  # (n_problems, rank, k), (n_problems, k)
    per_layer = z.reshape(n_fits, n_layers, rank, n_slots).permute(1, 2, 0, 3).reshape(n_layers, rank, -1)
    w = bases.weights(features, mean[0], std[0], per_layer).view(n_layers, -1, n_fits, n_slots).permute(2, 0, 1, 3)
    return {
        "w": w.to(features.dtype),
        "b": b.reshape(n_fits, n_layers, n_slots).to(features.dtype),
        "mean": mean,
        "std": std,
    }


def choose_formulation(n_rows: int, d_model: int) -> str:
    """dual (the basis of each layer's row space) where the training rows are fewer than the dimensions, else
    primal (the eigenbasis of its covariance).

    Each layer costs one Gram matrix of x (n_rows, d_model) and the eigendecomposition of it, and every evaluation
    one product with F (n_rows, rank): the dual's Gram is n x n and its F square, the primal's d x d and its F
    n x d. So the smaller side wins in every term, and the rule needs no measured constant
    (`benchmarks/bench_probe.py --crossover` checks it).
    """
    return "dual" if n_rows < d_model else "primal"
