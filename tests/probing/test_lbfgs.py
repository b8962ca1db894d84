"""batched_lbfgs on its own: independent problems of very different difficulty, solved in one call."""

import math

import torch

from stages.probing.lbfgs import batched_lbfgs

N_PARAMS = 6
CONDITION_NUMBERS = (1.0, 1e2, 1e4)


def quadratics(condition_numbers, seed=0):
    """Hessians (n, N_PARAMS, N_PARAMS), randomly rotated, spectra log-spaced around 1; optima (n, N_PARAMS)."""
    generator = torch.Generator().manual_seed(seed)
    hessians, optima = [], []
    for condition in condition_numbers:
        rotation, _ = torch.linalg.qr(torch.randn(N_PARAMS, N_PARAMS, generator=generator, dtype=torch.float64))
        half = math.log10(condition) / 2
        spectrum = torch.logspace(-half, half, N_PARAMS, dtype=torch.float64)
        hessians.append(rotation * spectrum @ rotation.T)
        optima.append(torch.randn(N_PARAMS, generator=generator, dtype=torch.float64) * 3)
    return torch.stack(hessians), torch.stack(optima)


def quadratic_objective(hessians, optima):
    """Per-row 0.5 (x - optimum)^T H (x - optimum) and its gradient; minimum 0 at the optimum."""

    def objective(x):
        offset = x - optima
        gradient = torch.einsum("pij,pj->pi", hessians, offset)
        return 0.5 * (offset * gradient).sum(1), gradient

    return objective


def rosenbrock(x):
    """Chained Rosenbrock per row and its gradient: curved valley, minimum 0 at all ones."""
    a, b = x[:, :-1], x[:, 1:]
    valley = b - a**2
    loss = (100 * valley**2 + (1 - a) ** 2).sum(1)
    gradient = torch.zeros_like(x)
    gradient[:, :-1] += -400 * a * valley - 2 * (1 - a)
    gradient[:, 1:] += 200 * valley
    return loss, gradient


def test_independent_problems_each_reach_their_own_optimum():
    """Rows: quadratics of condition 1, 1e2, 1e4, one more quadratic started at its optimum, one Rosenbrock."""
    hessians, optima = quadratics([*CONDITION_NUMBERS, 1e2])
    quadratic = quadratic_objective(hessians, optima)
    n_quadratic = len(optima)

    def objective(x):  # x: (n_quadratic + 1, N_PARAMS), the Rosenbrock row last
        quadratic_loss, quadratic_gradient = quadratic(x[:n_quadratic])
        valley_loss, valley_gradient = rosenbrock(x[n_quadratic:])
        return torch.cat([quadratic_loss, valley_loss]), torch.cat([quadratic_gradient, valley_gradient])

    start = torch.zeros(n_quadratic + 1, N_PARAMS, dtype=torch.float64)
    start[n_quadratic - 1] = optima[-1]  # already optimal: zero gradient from the start
    start[n_quadratic] = torch.tensor([-1.2, 1.0] * (N_PARAMS // 2))  # Rosenbrock's classic start
    optimum = torch.cat([optima, torch.ones(1, N_PARAMS, dtype=torch.float64)])

    # A tolerance below what the solver resolves: it also stops a row once its loss moves by < 1e-9, so each row
    # ends at a loss gap of about that size. Hence the checks on gap, distance and gradient, not on `tolerance`.
    solution = batched_lbfgs(objective, start, max_iter=1000, tolerance=1e-8).x

    loss, gradient = objective(solution)
    assert torch.equal(solution[n_quadratic - 1], optima[-1])  # never moved
    assert (loss < 1e-8).all(), loss  # every minimum is 0
    assert ((solution - optimum).abs().amax(1) < 1e-3).all(), solution - optimum
    assert (gradient.abs().amax(1) < 1e-3).all(), gradient
    # Batched rows do not interact: each solves as it would alone.
    for row in range(n_quadratic):
        alone = batched_lbfgs(
            quadratic_objective(hessians[row : row + 1], optima[row : row + 1]), start[row : row + 1], 1000, 1e-8
        ).x
        torch.testing.assert_close(solution[row : row + 1], alone, rtol=0, atol=1e-12)


def test_unit_first_step_takes_the_full_negative_gradient():
    """Preconditioned variables (Hessian = identity): the first step lands on the optimum, else it has unit length."""
    hessians = torch.eye(N_PARAMS, dtype=torch.float64).expand(2, -1, -1)
    optima = torch.full((2, N_PARAMS), 2.0, dtype=torch.float64)  # gradient norm at 0: 2 * sqrt(6) > 1
    objective = quadratic_objective(hessians, optima)
    start = torch.zeros(2, N_PARAMS, dtype=torch.float64)

    unit = batched_lbfgs(objective, start, max_iter=1, tolerance=1e-8, unit_first_step=True).x
    torch.testing.assert_close(unit, optima, rtol=0, atol=1e-12)
    default = batched_lbfgs(objective, start, max_iter=1, tolerance=1e-8).x
    torch.testing.assert_close(default.norm(dim=1), torch.ones(2, dtype=torch.float64))


def test_stationarity_measure_decides_which_rows_stop():
    """A row its `stationarity` calls converged is left where it is, even with a nonzero gradient."""
    hessians, optima = quadratics(CONDITION_NUMBERS[:2], seed=1)
    start = torch.zeros(2, N_PARAMS, dtype=torch.float64)
    first_row_ignored = torch.tensor([0.0, 1.0], dtype=torch.float64)

    def stationarity(gradient):
        return gradient.norm(dim=1) * first_row_ignored

    solution = batched_lbfgs(quadratic_objective(hessians, optima), start, 1000, 1e-6, stationarity=stationarity).x
    assert torch.equal(solution[0], start[0])
    torch.testing.assert_close(solution[1], optima[1], rtol=0, atol=1e-4)


def test_rows_set_aside_once_stopped_change_no_row_path():
    """With a restriction, rows that stopped are set aside (later evaluations see only the others), and every row
    ends where it ends riding along; the set-aside rows are written back as they stopped."""
    hessians, optima = quadratics([1.0, 1.0, 1.0, 1e2, 1e4, 1e4], seed=2)  # three stop early, three go on
    full = quadratic_objective(hessians, optima)
    start = torch.zeros(len(optima), N_PARAMS, dtype=torch.float64)
    evaluated = []

    def restrict(rows):
        evaluated.append(rows.tolist())
        objective = quadratic_objective(hessians[rows], optima[rows])
        return objective, lambda gradient: gradient.abs().amax(1)

    riding = batched_lbfgs(full, start, max_iter=300, tolerance=1e-8)
    set_aside = batched_lbfgs(full, start, max_iter=300, tolerance=1e-8, restrict=restrict)
    assert evaluated and all(len(rows) <= 3 for rows in evaluated)  # the well-conditioned rows left first
    assert {0, 1, 2}.isdisjoint(evaluated[-1])
    torch.testing.assert_close(set_aside.x, riding.x, rtol=0, atol=1e-12)
    torch.testing.assert_close(set_aside.loss, riding.loss, rtol=0, atol=1e-15)
    torch.testing.assert_close(set_aside.gradient, riding.gradient, rtol=0, atol=1e-12)
    assert len(set_aside.pairs) == 5
