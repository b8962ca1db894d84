"""Per-layer probes on option slots, fitted for every layer and every cross-fitting fold at once.

Pure torch, no I/O. A probe maps a standardised hidden state to one logit per option slot; slots beyond an
example's choices get -inf. All (fold, layer) problems are independent, so their objectives are summed and
minimised by a batched full-batch L-BFGS (`stages.probing.lbfgs`): every problem has its own curvature history
and step size, all problems share each tensor op; deterministic (zero or seeded init).

Objective of one (fold, layer) problem, on that fold's training rows:
    mean cross-entropy + l2 / 2 * ||W||^2   (biases unpenalised)
which is scikit-learn's multinomial LogisticRegression with C = 1 / (n_train * l2).

Every fit of a layer standardises with the statistics of all training rows (`reduction.shared_stats`).
The public entry points live here; the solvers in `logistic` (exact, in a basis each layer's fits share: its
row space, `dual`, or its covariance's eigenbasis, `primal`, picked by shape) and `mlp`, the standardisation
and the layers' bases in `reduction`, the forward pass and loss in `logits`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stages.probing.logistic import fit_logistic
from stages.probing.logits import masked_cross_entropy, probe_logits
from stages.probing.mlp import fit_mlp
from stages.probing.option_scorer import fit_option_scorer
from stages.probing.reduction import training_stats

__all__ = [
    "KINDS",
    "FitSettings",
    "cross_fit",
    "fit_probes",
    "fit_temperature",
    "fold_masks",
    "masked_cross_entropy",
    "out_of_fold_logits",
    "predict",
    "probe_logits",
    "select_folds",
    "training_stats",
]

KINDS = ("logistic", "mlp", "per_option")
MAX_TEMPERATURE = 100.0  # calibration bounds T to [1/100, 100]


@dataclass(frozen=True)
class FitSettings:
    kind: str = "logistic"
    l2: float = 1e-3
    seed: int = 0  # the mlp's initialisation; the logistic fit is convex and starts at zero
    max_iter: int = 500  # objective evaluations (each one trial step of every problem)
    tolerance: float = 1e-4  # on each problem's largest gradient entry: scikit-learn's default `tol` for lbfgs
    formulation: str = "auto"  # logistic only: dual | primal | auto (by shape: `stages.probing.logistic`)


def fold_masks(fold_of: torch.Tensor, n_folds: int) -> torch.Tensor:
    """(n_folds + 1, n_examples) bool training rows: fold k trains without fold k; the last row trains on all."""
    folds = torch.arange(n_folds)[:, None]  # (n_folds, 1)
    held_in = fold_of[None, :] != folds  # (n_folds, n_examples)
    return torch.cat([held_in, torch.ones(1, fold_of.numel(), dtype=torch.bool)])


def fit_probes(
    features: torch.Tensor, answers: torch.Tensor, valid: torch.Tensor, train: torch.Tensor, settings: FitSettings
) -> dict[str, torch.Tensor]:
    """Fit one probe per (training mask, layer).

    features: (n_layers, n_examples, d_model) float32, or (n_layers, n_examples, n_slots, d_model) per option for
    kind per_option; answers: (n_examples,) int64; valid: (n_examples, n_slots) bool; train: (n_fits, n_examples)
    bool. Returns params with leading dims (n_fits, n_layers).
    """
    l2, max_iter, tolerance = settings.l2, settings.max_iter, settings.tolerance
    if settings.kind == "per_option":
        return fit_option_scorer(features, answers, valid, train, l2=l2, max_iter=max_iter, tolerance=tolerance)
    if settings.kind == "logistic":
        return fit_logistic(
            features,
            answers,
            valid,
            train,
            l2=l2,
            max_iter=max_iter,
            tolerance=tolerance,
            formulation=settings.formulation,
        )
    return fit_mlp(features, answers, valid, train, l2=l2, max_iter=max_iter, tolerance=tolerance, seed=settings.seed)


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
    """The K fold probes' params of `fit_probes` on `fold_masks`, without the refit on all rows."""
    return {name: tensor[:n_folds] for name, tensor in params.items()}


def predict(params: dict[str, torch.Tensor], features: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(n_layers, n_examples, n_slots) logits of one probe per layer (params with leading dim n_layers)."""
    return probe_logits({name: tensor[None] for name, tensor in params.items()}, features, valid)[0]
