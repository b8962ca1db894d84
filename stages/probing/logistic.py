"""Multinomial L2 logistic probes, solved exactly in each fit's row space, preconditioned per direction.

In the reduced basis (`stages.probing.reduction.row_space`) the data term's Hessian at the start (uniform
probabilities) is exactly diag(S^2 / n_train) (x) A, with A the (n_slots, n_slots) mean softmax curvature, so
the change of variables Z = Yhat * (S^2 / n * a + l2)^(-1/2) in A's eigenbasis makes it the identity. As the fit
grows confident the curvature shrinks unevenly, so the diagonal is re-estimated at the current point after
PRECONDITIONER_ROUNDS iterations (L-BFGS restarts in the new variables): a few dozen steps instead of hundreds.
Same optimum as the full-dimensional problem.

float64 for the reduced problem: it is small, and near a separable optimum the float32 loss is too coarse for
the line search to tell steps apart (the fit stalled a few % away from the optimum's weights). The products
with the reduced features read (n_problems, n, rank) every evaluation and are memory-bound: float32 there,
float64 for the small (n, k) logits and everything after.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from stages.probing.lbfgs import batched_lbfgs
from stages.probing.reduction import (
    features_times,
    features_transposed_times,
    lift_weights,
    reduce_fits,
    training_stats,
)

# L-BFGS iterations between refreshes of the diagonal preconditioner (softmax curvature shrinks as the fit
# becomes confident, so the start's exact preconditioner goes stale); the last round runs to max_iter.
PRECONDITIONER_ROUNDS = (10, 20, 1_000_000)


@dataclass(frozen=True)
class ReducedProblem:
    """Every (fit, layer) logistic problem in row-space coordinates: Z (rank, k) and b (k) per problem."""

    features: torch.Tensor  # (n_problems, n_examples, rank) float32 U S, 0 on held-out rows
    squares: torch.Tensor  # features**2: the preconditioner only needs a rough diagonal
    weights: torch.Tensor  # (n_problems, n_examples) float64: 1 / n_train on training rows, 0 elsewhere
    gold: torch.Tensor  # (n_examples, k) float64 one-hot answers
    invalid: torch.Tensor  # (n_examples, k) bool: slots an example does not have
    l2: float

    def logits(self, z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(n_problems, n_examples, k) float64, -inf on invalid slots; z (n_problems, rank, k), b (n_problems, k)."""
        return (features_times(self.features, z) + b[:, None, :]).masked_fill(self.invalid, float("-inf"))

    def loss_and_gradient(self, z: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-problem mean CE + l2 / 2 * ||Z||^2 (n_problems,) and its gradients in z and in b."""
        log_probs = torch.log_softmax(self.logits(z, b), dim=-1)
        cross_entropy = -(log_probs.masked_fill(self.invalid, 0.0) * self.gold).sum(-1)  # (n_problems, n)
        loss = (cross_entropy * self.weights).sum(1) + self.l2 / 2 * (z**2).sum((1, 2))
        residual = (log_probs.exp() - self.gold) * self.weights[:, :, None]  # dCE/dlogits, (n_problems, n, k)
        grad_z = features_transposed_times(self.features, residual) + self.l2 * z
        return loss, grad_z, residual.sum(1)


def reduced_problem(
    features: torch.Tensor,
    answers: torch.Tensor,
    valid: torch.Tensor,
    train: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    l2: float,
) -> tuple[ReducedProblem, list[torch.Tensor]]:
    """The row-space problems of every (fit, layer) and each fit's lift back to d_model (see `reduce_fits`)."""
    reduced, lifts = reduce_fits(features, train, mean, std)
    narrow = reduced.float()  # see the module docstring: float32 for the memory-bound products
    del reduced
    n_layers = features.shape[0]
    weights = (train.double() / train.sum(dim=1)[:, None]).repeat_interleave(n_layers, 0)  # (n_problems, n)
    gold = torch.nn.functional.one_hot(answers, valid.shape[1]).double()
    problem = ReducedProblem(features=narrow, squares=narrow**2, weights=weights, gold=gold, invalid=~valid, l2=l2)
    return problem, lifts


def preconditioner(probs: torch.Tensor, squares: torch.Tensor, weights: torch.Tensor, l2: float):
    """Diagonal Hessian estimate of the reduced problem at the current probabilities, in the mean curvature's basis.

    probs: (n_problems, n_examples, k); squares: (n_problems, n_examples, rank), the squared reduced features.
    Returns the slot rotation (n_problems, k, k) and the scales (n_problems, rank, k), (n_problems, k):
    Z = (Yhat * scale) rotation^T.
    At uniform probabilities this is the exact Hessian (U is orthonormal on the training rows).
    """
    curvature = torch.diag_embed(probs) - probs[..., :, None] * probs[..., None, :]  # (n_problems, n, k, k)
    mean_curvature = torch.einsum("pn,pnij->pij", weights, curvature)
    slot_curvature, rotation = torch.linalg.eigh(mean_curvature)  # (n_problems, k), (n_problems, k, k)
    # Each example's curvature along each rotated slot direction, weighted by its squared reduced features.
    along = torch.einsum("pnij,pim,pjm->pnm", curvature, rotation, rotation)  # (n_problems, n, k)
    diagonal = features_transposed_times(squares, along * weights[..., None])  # (n_problems, rank, k)
    scale_w = (diagonal + l2).rsqrt() * (squares.amax(1) > 0)[:, :, None]  # dropped directions stay 0
    flat_direction = slot_curvature <= 1e-6 * slot_curvature[:, -1:].clamp_min(1e-30)  # shifts softmax ignores
    scale_b = slot_curvature.clamp_min(1e-30).rsqrt().masked_fill(flat_direction, 0.0)
    return rotation, scale_w, scale_b


@dataclass(frozen=True)
class Preconditioned:
    """The reduced problems in one round's preconditioned variables: Z = (Yhat * scale_w) rotation^T, likewise b.

    Flat variables per problem (what `batched_lbfgs` moves): Yhat (rank * k) then the bias part (k).
    Its bound methods `objective` and `stationarity` are what the solver calls.
    """

    problem: ReducedProblem
    rotation: torch.Tensor  # (n_problems, k, k): eigenbasis of the mean softmax curvature
    scale_w: torch.Tensor  # (n_problems, rank, k), 0 on dropped directions
    scale_b: torch.Tensor  # (n_problems, k), 0 on shifts the softmax ignores

    @classmethod
    def at(cls, problem: ReducedProblem, probs: torch.Tensor) -> Preconditioned:
        """Variables preconditioned at the current probabilities probs (n_problems, n_examples, k)."""
        return cls(problem, *preconditioner(probs, problem.squares, problem.weights, problem.l2))

    @cached_property
    def scale(self) -> torch.Tensor:
        """(n_problems, rank * k + k): both scales, in the flat variables' order."""
        return torch.cat([self.scale_w.flatten(1), self.scale_b], dim=1)

    def rotate(self, z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(n_problems, rank * k + k): z (n_problems, rank, k) and b (n_problems, k) in the slot eigenbasis, flat."""
        return torch.cat([(z @ self.rotation).flatten(1), (b[:, None, :] @ self.rotation)[:, 0]], dim=1)

    def pack(self, z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The point (z, b) in these variables (0 along directions the preconditioner freezes)."""
        return self.rotate(z, b) / self.scale.masked_fill(self.scale == 0, 1.0) * (self.scale > 0)

    def unpack(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (n_problems, rank, k) and b (n_problems, k) of flat variables (n_problems, rank * k + k)."""
        size_w = self.scale_w.shape[1] * self.scale_w.shape[2]
        z = (flat[:, :size_w].reshape(-1, *self.scale_w.shape[1:]) * self.scale_w) @ self.rotation.transpose(1, 2)
        b = ((flat[:, size_w:] * self.scale_b)[:, None, :] @ self.rotation.transpose(1, 2))[:, 0]
        return z, b

    def objective(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-problem loss (n_problems,) and its gradient in these variables (n_problems, rank * k + k)."""
        loss, grad_z, grad_b = self.problem.loss_and_gradient(*self.unpack(flat))
        return loss, self.rotate(grad_z, grad_b) * self.scale

    def stationarity(self, gradient: torch.Tensor) -> torch.Tensor:
        """Norm of the gradient in the original (W, b) coordinates: bounds sklearn's largest-entry `tol`."""
        return (gradient / self.scale.masked_fill(self.scale == 0, 1.0)).norm(dim=1)


def solve(problem: ReducedProblem, max_iter: int, tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """z (n_problems, rank, k) and b (n_problems, k) minimising each reduced problem, from zero.

    L-BFGS in preconditioned variables, restarted with a preconditioner refreshed at the current point after
    each of PRECONDITIONER_ROUNDS; `max_iter` bounds the iterations of all rounds together.
    """
    n_problems, _, rank = problem.features.shape
    valid = ~problem.invalid
    n_slots = valid.shape[1]
    z = torch.zeros(n_problems, rank, n_slots, dtype=torch.float64)
    b = torch.zeros(n_problems, n_slots, dtype=torch.float64)
    probs = (valid.double() / valid.sum(1, keepdim=True)).expand(n_problems, -1, -1)  # uniform at the start
    done = 0
    for budget in PRECONDITIONER_ROUNDS:
        budget = min(budget, max_iter - done)
        variables = Preconditioned.at(problem, probs)
        solution = batched_lbfgs(
            variables.objective,
            variables.pack(z, b),
            budget,
            tolerance,
            stationarity=variables.stationarity,
            unit_first_step=True,
        )
        z, b = variables.unpack(solution)
        done += budget
        if done >= max_iter:
            break
        probs = torch.softmax(problem.logits(z, b), dim=-1)  # where the next round's preconditioner is estimated
    return z, b


def fit_logistic(
    features: torch.Tensor,
    answers: torch.Tensor,
    valid: torch.Tensor,
    train: torch.Tensor,
    *,
    l2: float,
    max_iter: int,
    tolerance: float,
) -> dict[str, torch.Tensor]:
    """Multinomial L2 logistic probe per (training mask, layer); arguments and result as `fit_probes`.

    Each problem minimises its training rows' mean cross-entropy + l2 / 2 * ||W||^2 on standardised features.
    Stops when the gradient's 2-norm in (W, b) coordinates is below `tolerance` (stricter than sklearn's
    largest-entry test with the same tol).
    """
    n_layers = features.shape[0]
    n_fits, n_slots = train.shape[0], valid.shape[1]
    mean, std = training_stats(features, train)  # (n_fits, n_layers, d_model)
    problem, lifts = reduced_problem(features, answers, valid, train, mean, std, l2)
    z, b = solve(problem, max_iter, tolerance)
    z = z.reshape(n_fits, n_layers, -1, n_slots)  # (n_problems, rank, k) -> (n_fits, n_layers, rank, k)
    w = lift_weights(features, train, mean, std, lifts, z)
    return {"w": w, "b": b.reshape(n_fits, n_layers, n_slots).to(features.dtype), "mean": mean, "std": std}
