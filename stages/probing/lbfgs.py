"""L-BFGS for many independent problems at once: one row of a tensor per problem, shared tensor ops.

Written here because torch.optim.LBFGS runs one line search for all parameters together: on the summed
objective of many probes, one step size must suit every layer, so the well-conditioned layers crawl at the
step the worst one can take (`benchmarks/bench_probe.py` times the batched fit). Pure torch, deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# (s, y, rho) of one iteration, each with a leading n_problems dim: step, gradient change, 1 / (s . y) or 0.
Pair = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
MAX_HALVINGS = 30  # backtracking line search: a row whose step is still rejected after this many stays put


def largest_entry(gradient: torch.Tensor) -> torch.Tensor:
    """Per-row largest absolute gradient entry: scikit-learn's stopping test for lbfgs."""
    return gradient.abs().amax(1)


def batched_lbfgs(
    objective: Objective,
    x: torch.Tensor,
    max_iter: int,
    tolerance: float,
    history: int = 10,
    stationarity: Callable[[torch.Tensor], torch.Tensor] = largest_entry,
    unit_first_step: bool = False,
) -> torch.Tensor:
    """L-BFGS run independently for each row of x (n_problems, n_params), all rows in the same tensor ops.

    Each problem keeps its own curvature pairs and its own backtracking (Armijo) step, so an easy layer does
    not wait on a hard one's step size; converged problems stop moving. `objective(x)` returns per-row
    losses (n_problems,) and gradients (n_problems, n_params); a row stops once `stationarity(gradient)` <=
    tolerance. `unit_first_step`: the variables are preconditioned (Hessian ~ identity), so the first step is
    the full negative gradient. Deterministic: no randomness, fixed operation order.
    """
    loss, gradient = objective(x)
    # Initial inverse-Hessian scale, used while no curvature pair exists (the first iteration only). Without
    # preconditioning: unit-length first step, the line search shortens it when needed.
    first_scale = torch.ones_like(loss) if unit_first_step else 1.0 / gradient.norm(dim=1).clamp_min(1.0)
    pairs: list[Pair] = []
    active = stationarity(gradient) > tolerance
    for _ in range(max_iter):
        if not active.any():
            break
        direction, slope = descent_direction(gradient, pairs, first_scale, active)
        new_x, new_loss, new_gradient, accepted = line_search(objective, x, loss, gradient, direction, slope, active)
        s, y = new_x - x, new_gradient - gradient
        curvature = (s * y).sum(1)
        rho = torch.where(curvature > 1e-10, 1.0 / curvature.clamp_min(1e-10), torch.zeros_like(curvature))
        pairs = [*pairs[-(history - 1) :], (s, y, rho)]  # rho = 0 leaves a row's pair without effect
        # float32 stalls before tiny gradients are reached: also stop a row once its loss stops moving.
        moving = (loss - new_loss) > 1e-9 * new_loss.abs().clamp_min(1.0)
        x, loss, gradient = new_x, new_loss, new_gradient
        active = active & accepted & moving & (stationarity(gradient) > tolerance)
    return x


def descent_direction(
    gradient: torch.Tensor, pairs: list[Pair], first_scale: torch.Tensor, active: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row L-BFGS direction (n_problems, n_params) and its slope along the gradient (n_problems,).

    Two-loop recursion over the stored pairs; 0 for inactive rows. A row whose direction is not downhill has
    lost its curvature information and falls back to steepest descent.
    """
    q, alphas = gradient.clone(), []
    for s, y, rho in reversed(pairs):
        alpha = rho * (s * q).sum(1)
        q -= alpha[:, None] * y
        alphas.append(alpha)
    if pairs:
        s, y, _ = pairs[-1]
        scale = ((s * y).sum(1) / (y * y).sum(1).clamp_min(1e-30)).clamp_min(0)
    else:
        scale = first_scale
    direction = scale[:, None] * q
    for (s, y, rho), alpha in zip(pairs, reversed(alphas), strict=True):
        direction += s * (alpha - rho * (y * direction).sum(1))[:, None]
    direction = -direction * active[:, None]
    slope = (gradient * direction).sum(1)
    uphill = slope >= 0
    direction = torch.where(uphill[:, None], -gradient * active[:, None], direction)
    slope = torch.where(uphill, -(gradient**2).sum(1) * active, slope)
    return direction, slope


def line_search(
    objective: Objective,
    x: torch.Tensor,
    loss: torch.Tensor,
    gradient: torch.Tensor,
    direction: torch.Tensor,
    slope: torch.Tensor,
    active: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backtracking (Armijo) search along `direction`, each row halving its own step from 1.

    Returns the new x, loss and gradient (a row whose search failed keeps its old ones) and the accepted mask
    (n_problems,) bool; inactive rows count as accepted.
    """
    step = torch.ones_like(loss)
    for _ in range(MAX_HALVINGS):
        new_x = x + step[:, None] * direction
        new_loss, new_gradient = objective(new_x)
        accepted = (new_loss <= loss + 1e-4 * step * slope) | ~active
        if accepted.all():
            break
        step = torch.where(accepted, step, step / 2)
    new_x = torch.where(accepted[:, None], new_x, x)  # a row whose search failed stays put
    new_loss = torch.where(accepted, new_loss, loss)
    new_gradient = torch.where(accepted[:, None], new_gradient, gradient)
    return new_x, new_loss, new_gradient, accepted
