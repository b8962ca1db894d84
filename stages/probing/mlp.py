"""One-hidden-layer probes: all (fit, layer) problems at once, gradients by autograd, batched L-BFGS."""

from __future__ import annotations

import numpy as np
import torch

from stages.probing.lbfgs import batched_lbfgs
from stages.probing.logits import masked_cross_entropy, probe_logits
from stages.probing.reduction import shared_stats

MLP_HIDDEN = 64  # small on purpose: labeled sets are tens to hundreds of examples
PENALISED = ("w", "w_out")  # weights carry the L2 penalty, biases do not


def init_mlp_params(n_fits: int, n_layers: int, d_model: int, n_slots: int, seed: int) -> dict[str, torch.Tensor]:
    """Seeded start, leading dims (n_fits, n_layers): the MLP objective is not convex, so the start matters."""
    shape = (n_fits, n_layers)
    generator = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(*shape, d_model, MLP_HIDDEN, generator=generator) / d_model**0.5,
        "b": torch.zeros(*shape, MLP_HIDDEN),
        "w_out": torch.randn(*shape, MLP_HIDDEN, n_slots, generator=generator) / MLP_HIDDEN**0.5,
        "b_out": torch.zeros(*shape, n_slots),
    }


def fit_mlp(
    features: torch.Tensor,
    answers: torch.Tensor,
    valid: torch.Tensor,
    train: torch.Tensor,
    *,
    l2: float,
    max_iter: int,
    tolerance: float,
    seed: int,
) -> dict[str, torch.Tensor]:
    """One-hidden-layer probe per (training mask, layer); arguments and result as `stages.probing.fit.fit_probes`.

    Each problem minimises its training rows' mean cross-entropy + l2 / 2 * (||w||^2 + ||w_out||^2).
    """
    n_layers, _, d_model = features.shape
    n_fits = train.shape[0]
    mean, std = shared_stats(features, train)
    params = init_mlp_params(n_fits, n_layers, d_model, valid.shape[1], seed)
    weights = train.to(features.dtype) / train.sum(dim=1, keepdim=True)  # (n_fits, n_examples)
    names, shapes = list(params), [tensor.shape[2:] for tensor in params.values()]
    penalised = [name in PENALISED for name in names]
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
        loss = loss.reshape(-1) + l2 / 2 * sum(
            (p**2).flatten(1).sum(1) for p, pen in zip(flat.split(sizes, dim=1), penalised, strict=True) if pen
        )
        (gradient,) = torch.autograd.grad(loss.sum(), flat)
        return loss.detach(), gradient

    start = torch.cat([tensor.reshape(n_fits * n_layers, -1) for tensor in params.values()], dim=1)
    solution = batched_lbfgs(objective, start, max_iter, tolerance).x
    return {**unflatten(solution), "mean": mean, "std": std}
