"""The per-option probe: one linear scorer shared by every option, a softmax over the question's options.

Each option j of a question has its own representation x_j (stages/store/option_pass.py: the end of its line in the
prompt for decoders, its (question, option) pair for encoders). The probe scores s_j = w . z_j, z_j the
standardised x_j, and takes a softmax over the question's options: the same weights for every slot, so it handles
any number of options and is invariant to their order (a per-slot bias or weight would break both). A bias, or
any term shared by all options of a question, adds the same amount to every score and cancels in the softmax, so
there is none.

Objective of one (fold, layer) problem, on that fold's training questions, as the slot probe's:
    mean cross-entropy over questions + l2 / 2 * ||w||^2
Standardisation statistics come from the training questions' options. Every (fold, layer) problem is solved at
once by the batched L-BFGS of `stages.probing.lbfgs` (convex: from zero, deterministic), gradients written out.
"""

from __future__ import annotations

import torch

from stages.probing.lbfgs import batched_lbfgs
from stages.probing.logits import cross_entropy_and_residual, option_logits
from stages.probing.reduction import training_stats


def option_stats(features: torch.Tensor, valid: torch.Tensor, train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (n_fits, n_layers, d_model) over the options of all training questions, the same for every
    fit (as `stages.probing.reduction.shared_stats`).

    features: (n_layers, n_examples, n_slots, d_model); valid: (n_examples, n_slots); train: (n_fits, n_examples).
    """
    n_layers, n_examples, n_slots, d_model = features.shape
    rows = (train.any(0)[:, None] & valid).reshape(1, n_examples * n_slots)
    mean, std = training_stats(features.reshape(n_layers, n_examples * n_slots, d_model), rows)
    return mean.expand(train.shape[0], -1, -1), std.expand(train.shape[0], -1, -1)


def fit_option_scorer(
    features: torch.Tensor, answers: torch.Tensor, valid: torch.Tensor, train: torch.Tensor, *, l2: float,
    max_iter: int, tolerance: float,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """One shared linear scorer per (training mask, layer): params with leading dims (n_fits, n_layers).

    features: (n_layers, n_examples, n_slots, d_model) float32; answers: (n_examples,) int64; valid:
    (n_examples, n_slots) bool; train: (n_fits, n_examples) bool. Zero option vectors beyond an example's options
    are masked, never scored.
    """
    n_layers, _, n_slots, d_model = features.shape
    n_fits = train.shape[0]
    mean, std = option_stats(features, valid, train)
    weights = (train.double() / train.sum(1, keepdim=True)).float()  # (n_fits, n_examples): 1 / n_train or 0
    gold = torch.nn.functional.one_hot(answers, n_slots).to(features.dtype)  # (n_examples, n_slots)

    def objective(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-problem loss (n_problems,) and gradient (n_problems, d_model), float64 (n_problems = fits x layers)."""
        w = flat.reshape(n_fits, n_layers, d_model)
        params = {"w": w.float(), "mean": mean, "std": std}
        logits = option_logits(params, features, valid)
        cross_entropy, residual = cross_entropy_and_residual(logits, gold)  # (f, l, n), (f, l, n, s)
        loss = (cross_entropy * weights[:, None, :]).sum(-1).double() + l2 / 2 * (w**2).sum(-1)
        # The offset's gradient is zero: each question's residuals sum to zero over its options.
        residual = residual.masked_fill(~valid, 0.0) * weights[:, None, :, None]
        gradient = torch.einsum("flns,lnsd->fld", residual, features).double() / std + l2 * w
        return loss.reshape(-1), gradient.reshape(n_fits * n_layers, d_model)

    start = torch.zeros(n_fits * n_layers, d_model, dtype=torch.float64)
    solution = batched_lbfgs(objective, start, max_iter, tolerance).x
    return {"w": solution.reshape(n_fits, n_layers, d_model).to(features.dtype), "mean": mean, "std": std}
