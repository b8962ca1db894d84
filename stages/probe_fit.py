"""Per-layer probes on option slots, fitted for every layer and every cross-fitting fold at once.

Pure torch, no I/O. A probe maps a standardised hidden state to one logit per option slot; slots beyond an
example's choices get -inf. All (fold, layer) problems are independent, so their objectives are summed and
minimised by a batched full-batch L-BFGS: every problem has its own curvature history and step size, all
problems share each tensor op; deterministic (zero or seeded init). Logistic probes are solved exactly in each
fit's row space (features U S from the Gram matrix's eigendecomposition), preconditioned per direction.

Objective of one (fold, layer) problem, on that fold's training rows:
    mean cross-entropy + l2 / 2 * ||W||^2   (biases unpenalised)
which is scikit-learn's multinomial LogisticRegression with C = 1 / (n_train * l2).

Standardisation uses the training rows' mean and std. It is folded into the first linear map
(W / std and an offset) so the features are never copied once per fold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stages.batched_lbfgs import batched_lbfgs

KINDS = ("logistic", "mlp")
MLP_HIDDEN = 64  # small on purpose: labeled sets are tens to hundreds of examples
MAX_TEMPERATURE = 100.0  # calibration bounds T to [1/100, 100]
STD_FLOOR = 1e-6  # constant features (e.g. the embedding of the shared last prompt token) standardise to 0
# L-BFGS iterations between refreshes of the diagonal preconditioner (softmax curvature shrinks as the fit
# becomes confident, so the start's exact preconditioner goes stale); the last round runs to max_iter.
PRECONDITIONER_ROUNDS = (10, 20, 1_000_000)
EIGEN_FLOOR = 1e-6  # Gram eigenvalues below this fraction of the largest are float32 noise: direction dropped


@dataclass(frozen=True)
class FitSettings:
    kind: str = "logistic"
    l2: float = 1e-3
    seed: int = 0
    max_iter: int = 500
    tolerance: float = 1e-4  # on each problem's largest gradient entry: scikit-learn's default `tol` for lbfgs


def fold_masks(fold_of: torch.Tensor, n_folds: int) -> torch.Tensor:
    """(n_folds + 1, n_examples) bool training rows: fold k trains without fold k; the last row trains on all."""
    folds = torch.arange(n_folds)[:, None]  # (n_folds, 1)
    held_in = fold_of[None, :] != folds  # (n_folds, n_examples)
    return torch.cat([held_in, torch.ones(1, fold_of.numel(), dtype=torch.bool)])


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


def init_params(
    kind: str, n_fits: int, n_layers: int, d_model: int, n_slots: int, seed: int
) -> dict[str, torch.Tensor]:
    shape = (n_fits, n_layers)
    if kind == "logistic":  # convex: start at zero, the optimum does not depend on it
        return {"w": torch.zeros(*shape, d_model, n_slots), "b": torch.zeros(*shape, n_slots)}
    generator = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(*shape, d_model, MLP_HIDDEN, generator=generator) / d_model**0.5,
        "b": torch.zeros(*shape, MLP_HIDDEN),
        "w_out": torch.randn(*shape, MLP_HIDDEN, n_slots, generator=generator) / MLP_HIDDEN**0.5,
        "b_out": torch.zeros(*shape, n_slots),
    }


def probe_logits(params: dict[str, torch.Tensor], features: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(n_fits, n_layers, n_examples, n_slots) logits, -inf on invalid slots.

    params hold `mean`, `std` (n_fits, n_layers, d_model) and the weights; features (n_layers, n_examples, d_model).
    """
    scaled = params["w"] / params["std"][..., None]  # (n_fits, n_layers, d_model, d_out)
    offset = params["b"] - torch.einsum("fld,fldo->flo", params["mean"], scaled)  # (n_fits, n_layers, d_out)
    # One batched matmul per fit keeps `features` shared instead of expanded to n_fits copies.
    out = torch.stack([torch.bmm(features, s) for s in scaled]) + offset[:, :, None, :]
    if "w_out" in params:
        out = torch.nn.functional.gelu(out) @ params["w_out"] + params["b_out"][:, :, None, :]
    return out.masked_fill(~valid, float("-inf"))


def masked_cross_entropy(logits: torch.Tensor, answers: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-problem weighted mean CE: logits (n_fits, n_layers, n_examples, n_slots), weights (n_fits, n_examples)."""
    log_probs = torch.log_softmax(logits, dim=-1)
    gold = log_probs.gather(-1, answers.expand(*logits.shape[:2], -1)[..., None])[..., 0]  # (fits, layers, examples)
    return -(gold * weights[:, None, :]).sum(-1)  # (n_fits, n_layers)


def fit_probes(
    features: torch.Tensor, answers: torch.Tensor, valid: torch.Tensor, train: torch.Tensor, settings: FitSettings
) -> dict[str, torch.Tensor]:
    """Fit one probe per (training mask, layer).

    features: (n_layers, n_examples, d_model) float32; answers: (n_examples,) int64; valid: (n_examples, n_slots)
    bool; train: (n_fits, n_examples) bool. Returns params with leading dims (n_fits, n_layers).
    """
    if settings.kind == "logistic":
        return fit_logistic(features, answers, valid, train, settings)
    return fit_mlp(features, answers, valid, train, settings)


def standardised_rows(features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, rows: torch.Tensor):
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
    eigenvalues, vectors = torch.linalg.eigh(gram.double())  # float64 from here: see `fit_logistic`
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


def fit_logistic(
    features: torch.Tensor, answers: torch.Tensor, valid: torch.Tensor, train: torch.Tensor, settings: FitSettings
) -> dict[str, torch.Tensor]:
    """Multinomial L2 logistic regression in each fit's row space, preconditioned per direction.

    In the reduced basis the data term's Hessian at the start (uniform probabilities) is exactly
    diag(S^2 / n_train) (x) A, with A the (n_slots, n_slots) mean softmax curvature, so the change of variables
    Z = Yhat * (S^2 / n * a + l2)^(-1/2) in A's eigenbasis makes it the identity. As the fit grows confident
    the curvature shrinks unevenly, so the diagonal is re-estimated at the current point after
    PRECONDITIONER_ROUNDS iterations (L-BFGS restarts in the new variables): a few dozen steps instead of
    hundreds. Same optimum as the full-dimensional problem. Stops when the gradient's 2-norm in (W, b)
    coordinates is below `tolerance` (stricter than sklearn's largest-entry test with the same tol).
    """
    n_layers, n_examples, d_model = features.shape
    n_fits, n_slots = train.shape[0], valid.shape[1]
    mean, std = training_stats(features, train)  # (n_fits, n_layers, d_model)
    counts = train.sum(dim=1)  # (n_fits,)
    rank = int(min(counts.max(), d_model))
    # float64 for the reduced problem: it is small, and near a separable optimum the float32 loss is too coarse
    # for the line search to tell steps apart (the fit stalled a few % away from the optimum's weights).
    reduced = torch.zeros(n_fits, n_layers, n_examples, rank, dtype=torch.float64)  # held-out rows stay 0
    lifts = []
    for fit in range(n_fits):
        rows = train[fit].nonzero()[:, 0]
        x, _, lift = row_space(standardised_rows(features, mean[fit], std[fit], rows))
        reduced[fit, :, rows, : x.shape[2]] = x
        lifts.append(lift)
    n_problems = n_fits * n_layers
    reduced = reduced.reshape(n_problems, n_examples, rank)
    # The products with the features read (n_problems, n, rank) every evaluation and are memory-bound: float32
    # there, float64 for the small (n, k) logits and everything after.
    narrow = reduced.float()
    del reduced
    squares = narrow**2  # (n_problems, n, rank): the preconditioner only needs a rough diagonal
    weights = (train.double() / counts[:, None]).repeat_interleave(n_layers, 0)  # (n_problems, n_examples)

    gold = torch.nn.functional.one_hot(answers, n_slots).double()  # (n_examples, k)
    invalid = ~valid
    size_w = rank * n_slots
    z = torch.zeros(n_problems, rank, n_slots, dtype=torch.float64)
    b = torch.zeros(n_problems, n_slots, dtype=torch.float64)
    probs = (valid.double() / valid.sum(1, keepdim=True)).expand(n_problems, -1, -1)  # uniform at the start
    done = 0
    for budget in PRECONDITIONER_ROUNDS:
        budget = min(budget, settings.max_iter - done)
        rotation, scale_w, scale_b = preconditioner(probs, squares, weights, settings.l2)
        scale = torch.cat([scale_w.flatten(1), scale_b], dim=1)  # (n_problems, n_params)

        def unpack(flat, rotation=rotation, scale_w=scale_w, scale_b=scale_b):
            z = (flat[:, :size_w].reshape(-1, rank, n_slots) * scale_w) @ rotation.transpose(1, 2)
            b = ((flat[:, size_w:] * scale_b)[:, None, :] @ rotation.transpose(1, 2))[:, 0]
            return z, b

        def objective(flat, unpack=unpack, rotation=rotation, scale_w=scale_w, scale_b=scale_b):
            z, b = unpack(flat)  # (n_problems, rank, k), (n_problems, k)
            logits = (features_times(narrow, z) + b[:, None, :]).masked_fill(invalid, float("-inf"))
            log_probs = torch.log_softmax(logits, dim=-1)
            cross_entropy = -(log_probs.masked_fill(invalid, 0.0) * gold).sum(-1)  # (n_problems, n)
            loss = (cross_entropy * weights).sum(1) + settings.l2 / 2 * (z**2).sum((1, 2))
            residual = (log_probs.exp() - gold) * weights[:, :, None]  # dCE/dlogits, (n_problems, n, k)
            grad_z = features_transposed_times(narrow, residual) + settings.l2 * z
            grad_b = residual.sum(1)
            rotated = torch.cat([(grad_z @ rotation).flatten(1), (grad_b[:, None, :] @ rotation)[:, 0]], dim=1)
            return loss, rotated * torch.cat([scale_w.flatten(1), scale_b], dim=1)

        def stationarity(gradient, scale=scale):
            """Norm of the gradient in the original (W, b) coordinates: bounds sklearn's largest-entry `tol`."""
            return (gradient / scale.masked_fill(scale == 0, 1.0)).norm(dim=1)

        # Current point in the new coordinates (0 along directions the preconditioner freezes).
        rotated = torch.cat([(z @ rotation).flatten(1), (b[:, None, :] @ rotation)[:, 0]], dim=1)
        start = rotated / scale.masked_fill(scale == 0, 1.0) * (scale > 0)
        solution = batched_lbfgs(
            objective, start, budget, settings.tolerance, stationarity=stationarity, unit_first_step=True
        )
        z, b = unpack(solution)
        done += budget
        logits = (features_times(narrow, z) + b[:, None, :]).masked_fill(invalid, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if done >= settings.max_iter:
            break
    z = z.reshape(n_fits, n_layers, rank, n_slots)
    w = features.new_empty(n_fits, n_layers, d_model, n_slots)
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
    return {"w": w, "b": b.reshape(n_fits, n_layers, n_slots).to(features.dtype), "mean": mean, "std": std}


# Both products below are skinny (k = a few option slots), memory-bound batched GEMMs. Computed transposed,
# as (k x n) @ (n x r) with the features in their stored layout: measured 3.5-4.5x faster on CPU than
# (n x r) @ (r x k) and (r x n) @ (n x k), for the same float32 reads.
def features_times(features: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """features (p, n, r) float32 @ coefficients (p, r, k) float64 -> (p, n, k) float64."""
    return torch.bmm(coefficients.float().transpose(1, 2), features.transpose(1, 2)).transpose(1, 2).double()


def features_transposed_times(features: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """features (p, n, r) float32 transposed @ residual (p, n, k) float64 -> (p, r, k) float64."""
    return torch.bmm(residual.float().transpose(1, 2), features).transpose(1, 2).double()


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


def fit_mlp(
    features: torch.Tensor, answers: torch.Tensor, valid: torch.Tensor, train: torch.Tensor, settings: FitSettings
) -> dict[str, torch.Tensor]:
    """One-hidden-layer probes, all (fit, layer) problems at once with autograd and batched L-BFGS."""
    n_layers, _, d_model = features.shape
    n_fits = train.shape[0]
    mean, std = training_stats(features, train)
    params = init_params(settings.kind, n_fits, n_layers, d_model, valid.shape[1], settings.seed)
    weights = train.to(features.dtype) / train.sum(dim=1, keepdim=True)  # (n_fits, n_examples)
    names, shapes = list(params), [tensor.shape[2:] for tensor in params.values()]
    penalised = [name in ("w", "w_out") for name in names]
    sizes = [int(np.prod(shape)) for shape in shapes]

    def unflatten(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        pieces = flat.split(sizes, dim=1)  # flat: (n_fits * n_layers, n_params)
        return {n: p.reshape(n_fits, n_layers, *shape) for n, p, shape in zip(names, pieces, shapes, strict=True)}

    def objective(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-problem loss (n_problems,) and gradient (n_problems, n_params); problems are independent."""
        flat = flat.detach().requires_grad_(True)
        current = unflatten(flat)
        loss = masked_cross_entropy(
            probe_logits({**current, "mean": mean, "std": std}, features, valid), answers, weights
        )
        loss = loss.reshape(-1) + settings.l2 / 2 * sum(
            (p**2).flatten(1).sum(1) for p, pen in zip(flat.split(sizes, dim=1), penalised, strict=True) if pen
        )
        (gradient,) = torch.autograd.grad(loss.sum(), flat)
        return loss.detach(), gradient

    start = torch.cat([tensor.reshape(n_fits * n_layers, -1) for tensor in params.values()], dim=1)
    solution = batched_lbfgs(objective, start, settings.max_iter, settings.tolerance)
    return {**unflatten(solution), "mean": mean, "std": std}


def out_of_fold_logits(logits: torch.Tensor, fold_of: torch.Tensor) -> torch.Tensor:
    """(n_layers, n_examples, n_slots): each example's logits from the fold probe that did not train on it.

    logits: (n_folds + 1, n_layers, n_examples, n_slots) from the fold masks of `fold_masks`.
    """
    index = fold_of[None, None, :, None].expand(1, *logits.shape[1:])  # (1, n_layers, n_examples, n_slots)
    return logits.gather(0, index)[0]


def fit_temperature(logits: torch.Tensor, answers: torch.Tensor, max_iter: int = 100) -> torch.Tensor:
    """(n_layers,) temperatures minimising each layer's NLL; logits (n_layers, n_examples, n_slots), -inf masked.

    T is bounded to [1/MAX_TEMPERATURE, MAX_TEMPERATURE]: a pure-noise layer's NLL keeps falling as T grows
    (towards uniform) and a separable layer's as T shrinks, so the unconstrained optimum can be infinite.
    """
    valid = torch.isfinite(logits)
    finite = logits.masked_fill(~valid, 0.0)  # -inf / T would give 0 * inf = NaN gradients
    bound = float(np.log(MAX_TEMPERATURE))
    raw = torch.zeros(logits.shape[0], requires_grad=True)
    optimiser = torch.optim.LBFGS([raw], max_iter=max_iter, line_search_fn="strong_wolfe")
    weights = torch.full((1, logits.shape[1]), 1.0 / logits.shape[1])

    def temperature() -> torch.Tensor:
        return torch.exp(bound * torch.tanh(raw))

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        scaled = (finite / temperature()[:, None, None]).masked_fill(~valid, float("-inf"))
        loss = masked_cross_entropy(scaled[None], answers, weights).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return temperature().detach()


def cross_fit(
    features: torch.Tensor, answers: torch.Tensor, valid: torch.Tensor, fold_of: np.ndarray, settings: FitSettings
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """K fold probes and a refit on all rows, in one optimisation.

    Returns out-of-fold logits (n_layers, n_examples, n_slots) and the refit's params (leading dim n_layers).
    """
    folds = torch.from_numpy(fold_of)
    n_folds = int(folds.max()) + 1
    params = fit_probes(features, answers, valid, fold_masks(folds, n_folds), settings)
    out_of_fold = out_of_fold_logits(probe_logits(select_folds(params, n_folds), features, valid), folds)
    return out_of_fold, {name: tensor[n_folds] for name, tensor in params.items()}


def select_folds(params: dict[str, torch.Tensor], n_folds: int) -> dict[str, torch.Tensor]:
    return {name: tensor[:n_folds] for name, tensor in params.items()}


def predict(params: dict[str, torch.Tensor], features: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(n_layers, n_examples, n_slots) logits of one probe per layer (params with leading dim n_layers)."""
    return probe_logits({name: tensor[None] for name, tensor in params.items()}, features, valid)[0]
