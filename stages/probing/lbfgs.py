"""L-BFGS for many independent problems at once: one row of a tensor per problem, shared tensor ops.

Written here because torch.optim.LBFGS runs one line search for all parameters together: on the summed
objective of many probes, one step size must suit every layer, so the well-conditioned layers crawl at the
step the worst one can take (`benchmarks/bench_probe.py` times the batched fit). Pure torch, deterministic.

Every evaluation is one trial step for every row: a row whose trial fails the Armijo test halves its step and
tries again at the next evaluation, while the other rows go on. A line search that backtracked inside each
iteration would make every row wait for the row needing the most halvings: with dozens of problems, almost
every iteration has one, and the batch paid about twice the evaluations any single problem needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Stationarity = Callable[[torch.Tensor], torch.Tensor]
# The objective and stationarity test of some rows alone, given their indices into all of x's rows.
Restriction = Callable[[torch.Tensor], tuple[Objective, Stationarity]]
MAX_HALVINGS = 30  # a row whose step is still rejected after this many halvings in a row stops where it is
ARMIJO = 1e-4  # sufficient decrease: loss <= loss + ARMIJO * step * slope
# Near the optimum the decrease Armijo asks for falls below the loss's rounding (the probes' products are
# float32): a step is then also accepted where the loss is flat to LOSS_NOISE relative and the slope at the
# trial point says it did not overshoot (Hager & Zhang's approximate Wolfe test, delta = 0.1). Without it, a
# row near its optimum spent up to MAX_HALVINGS evaluations rejecting steps on rounding noise.
LOSS_NOISE = 1e-6
OVERSHOOT = 0.8  # trial slope <= -OVERSHOOT * slope: for a quadratic, at most 1.8x the exact line minimum
STALLED = 1e-12  # a row whose accepted step lowers its loss by less than this (relative) stops
# With a `Restriction`, once at most this fraction of the rows being solved is still active the others are set
# aside: a fit's last third of evaluations has a few problems left (of 96 in 16 layers, 89 in 16 layers active at
# evaluation 20, 38 in 8 at 23, 9 in 3 at 27 on bench_probe's 16 x 1024 x 128), and every op ran on all.
SET_ASIDE_BELOW = 0.5


def largest_entry(gradient: torch.Tensor) -> torch.Tensor:
    """Per-row largest absolute gradient entry: scikit-learn's stopping test for lbfgs."""
    return gradient.abs().amax(1)


def row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row dot products of two (n_problems, n_params) tensors. torch.linalg.vecdot is 2.4x slower than this
    product and sum at the probes' (198, 2052) float64 (0.46 ms against 0.19 on one thread), and the two-loop
    takes a dozen of them per evaluation."""
    return (a * b).sum(-1)


# (s, y, rho) of one evaluation, each with a leading n_problems dim: step, gradient change, 1 / (s . y) or 0.
Pair = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def curvature_pair(s: torch.Tensor, y: torch.Tensor, rows: torch.Tensor) -> Pair:
    """The pair of one evaluation; rho = 0 (no effect) where a row did not move or the curvature is not positive."""
    curvature = row_dot(s, y)
    rho = torch.where(rows & (curvature > 1e-10), 1.0 / curvature.clamp_min(1e-10), torch.zeros_like(curvature))
    return s, y, rho


@dataclass(frozen=True)
class State:
    """Where a run stopped, to go on from: the point, its per-row losses and gradients, the curvature pairs."""

    x: torch.Tensor
    loss: torch.Tensor
    gradient: torch.Tensor
    pairs: list[Pair]


def batched_lbfgs(
    objective: Objective,
    x: torch.Tensor | State,
    max_iter: int,
    tolerance: float,
    history: int = 5,
    stationarity: Stationarity = largest_entry,
    unit_first_step: bool = False,
    restrict: Restriction | None = None,
) -> State:
    """L-BFGS run independently for each row of x (n_problems, n_params), all rows in the same tensor ops.

    Each problem has its own curvature pairs and its own backtracking (Armijo) step, so an easy layer does
    not wait on a hard one's step size; converged problems stop moving, and each row follows the path it
    would follow alone. `objective(x)` returns per-row losses (n_problems,) and gradients (n_problems,
    n_params); a row stops once `stationarity(gradient)` <= tolerance. `max_iter` counts evaluations (trial
    steps). x may be the `State` a previous run returned (its memory and gradients carried over, no first
    evaluation). `unit_first_step`: the variables are preconditioned (Hessian ~ identity), so the first step
    is the full negative gradient. `restrict`: how to evaluate some rows alone, so that rows which have stopped
    are set aside (SET_ASIDE_BELOW) instead of riding along in every op. The active rows' path is the same
    either way; a set-aside row keeps its memory (riding along, it would fill with empty pairs), which only a
    run resumed from the returned State sees. Deterministic: no randomness, fixed operation order.
    """
    if isinstance(x, State):
        state = x
        x, loss, gradient, pairs = state.x, state.loss, state.gradient, state.pairs
    else:
        loss, gradient = objective(x)
        pairs = []
    # Initial inverse-Hessian scale, used while a row has no curvature pair. Without preconditioning:
    # unit-length first step, the line search shortens it when needed.
    first_scale = torch.ones_like(loss) if unit_first_step else 1.0 / gradient.norm(dim=1).clamp_min(1.0)
    active = stationarity(gradient) > tolerance
    direction, slope = descent_direction(gradient, pairs, first_scale, active)
    step = torch.ones_like(loss)
    solved: State | None = None  # once rows are set aside: every row's values, the ones below written back
    rows = torch.arange(loss.numel(), device=loss.device)  # the rows being solved, as indices into all
    for _ in range(max_iter):
        n_active = int(active.sum())
        if n_active == 0:
            break
        if restrict is not None and n_active <= SET_ASIDE_BELOW * rows.numel():
            current = padded(State(x, loss, gradient, pairs), history)
            solved = current if solved is None else written_back(solved, rows, current)
            keep = active.nonzero()[:, 0]
            rows = rows[keep]
            x, loss, gradient, direction, slope, step, first_scale, active = (
                t[keep] for t in (x, loss, gradient, direction, slope, step, first_scale, active)
            )
            pairs = [(s[keep], y[keep], rho[keep]) for s, y, rho in current.pairs]
            objective, stationarity = restrict(rows)
        trial = torch.addcmul(x, step[:, None], direction)
        trial_loss, trial_gradient = objective(trial)
        flat = trial_loss <= loss + LOSS_NOISE * loss.abs()
        not_past = row_dot(trial_gradient, direction) <= -OVERSHOOT * slope
        decreased = active & (trial_loss <= loss + ARMIJO * step * slope)
        accepted = decreased | (active & flat & not_past)
        # A rejected row's pair is empty (rho = 0): it shortens that row's memory, exactly as if it ran alone.
        pairs = [*pairs[-(history - 1) :], curvature_pair(trial - x, trial_gradient - gradient, accepted)]
        # A row whose loss no longer moves stops (only on steps the loss itself accepted: past its resolution,
        # the slope test above keeps the row going on exact gradients, to the tolerance).
        stalled = decreased & ((loss - trial_loss) <= STALLED * trial_loss.abs().clamp_min(1.0))
        x = torch.where(accepted[:, None], trial, x)
        loss = torch.where(accepted, trial_loss, loss)
        gradient = torch.where(accepted[:, None], trial_gradient, gradient)
        step = torch.where(accepted, torch.ones_like(step), step / 2)
        active = active & ~stalled & (step > 2.0**-MAX_HALVINGS) & (stationarity(gradient) > tolerance)
        new_direction, new_slope = descent_direction(gradient, pairs, first_scale, active & accepted)
        direction = torch.where(accepted[:, None], new_direction, direction)  # a rejected row retries its own
        slope = torch.where(accepted, new_slope, slope)
    current = State(x, loss, gradient, pairs)
    return current if solved is None else written_back(solved, rows, current)


def padded(state: State, history: int) -> State:
    """The state with `history` pairs, empty ones (no effect) in front where it has fewer: once rows are set
    aside, the j-th pair of a set-aside row and of a row still solved are both the j-th from the newest."""
    missing = history - len(state.pairs)
    empty = torch.zeros_like(state.x), torch.zeros_like(state.x), torch.zeros_like(state.loss)
    return State(state.x, state.loss, state.gradient, [empty] * missing + state.pairs)


def written_back(solved: State, rows: torch.Tensor, current: State) -> State:
    """Every row's state: `solved`, with the state of `rows` (indices into its rows) replaced by `current`."""

    def put(into: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return into.index_copy(0, rows, values)

    pairs = [
        (put(s, t), put(y, u), put(rho, sigma))
        for (s, y, rho), (t, u, sigma) in zip(solved.pairs, current.pairs, strict=True)
    ]
    return State(
        put(solved.x, current.x), put(solved.loss, current.loss), put(solved.gradient, current.gradient), pairs
    )


def descent_direction(
    gradient: torch.Tensor, pairs: list[Pair], first_scale: torch.Tensor, active: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row L-BFGS direction (n_problems, n_params) and its slope along the gradient (n_problems,).

    Two-loop recursion over the stored pairs (a row's empty pairs have no effect); 0 for inactive rows. A row
    whose direction is not downhill has lost its curvature information and falls back to steepest descent.
    """
    # In-place updates throughout: the vectors are (n_problems, n_params), and this runs once per evaluation. An
    # inactive row starts from a zero gradient, so every coefficient and its direction come out 0.
    q, alphas = gradient * active[:, None], []
    for s, y, rho in reversed(pairs):
        alpha = rho * row_dot(s, q)
        q.addcmul_(y, alpha[:, None], value=-1.0)
        alphas.append(alpha)
    scale = first_scale  # initial inverse-Hessian scale: from the newest pair, where it has curvature
    if pairs:
        s, y, rho = pairs[-1]
        scale = torch.where(rho > 0, 1.0 / (rho * row_dot(y, y)).clamp_min(1e-300), scale)
    direction = q.mul_(-scale[:, None])  # negated: the loop below adds -s * coefficient
    for (s, y, rho), alpha in zip(pairs, reversed(alphas), strict=True):
        direction.addcmul_(s, (rho * row_dot(y, direction) + alpha)[:, None], value=-1.0)
    slope = row_dot(gradient, direction)
    uphill = active & (slope >= 0)
    if uphill.any():
        direction = torch.where(uphill[:, None], -gradient, direction)
        slope = torch.where(uphill, -row_dot(gradient, gradient), slope)
    return direction, slope
