"""The per-option probe: the batched fit against a direct float64 L-BFGS (scipy), order invariance, any number of
options, cross-fitting through the same entry points as the slot probes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from stages.probing.fit import FitSettings, cross_fit, fit_probes, fold_masks, predict
from stages.probing.option_scorer import option_stats

L2 = 1e-2


def option_problem(n_layers=3, n_examples=40, n_slots=5, d_model=12, seed=0):
    """Options whose representation carries a 'correct' direction (more so in deeper layers); 3..5 options."""
    rng = np.random.default_rng(seed)
    n_choices = rng.integers(3, n_slots + 1, n_examples)
    answers = rng.integers(0, n_choices)
    valid = np.arange(n_slots)[None, :] < n_choices[:, None]
    features = rng.normal(size=(n_layers, n_examples, n_slots, d_model)) + 5.0  # an offset standardising removes
    for layer in range(n_layers):
        features[layer, np.arange(n_examples), answers, 0] += 1.0 + layer
    features[:, ~valid] = 0.0
    return (torch.tensor(features, dtype=torch.float32), torch.tensor(answers), torch.tensor(valid))


def objective_of(x: np.ndarray, answers: np.ndarray, valid: np.ndarray, l2: float, w: np.ndarray):
    """Loss and gradient of one problem at w, x (n, slots, d) already standardised, in float64."""
    scores = np.where(valid, x @ w, -np.inf)
    top = scores.max(1, keepdims=True)
    log_z = np.log(np.exp(scores - top).sum(1)) + top[:, 0]
    residual = np.exp(scores - log_z[:, None])
    residual[np.arange(len(x)), answers] -= 1
    loss = (log_z - scores[np.arange(len(x)), answers]).mean() + l2 / 2 * w @ w
    return loss, np.einsum("ns,nsd->d", residual, x) / len(x) + l2 * w


def scipy_fit(x: np.ndarray, answers: np.ndarray, valid: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """w and objective of one problem, solved directly to a tight tolerance."""
    result = minimize(lambda w: objective_of(x, answers, valid, l2, w), np.zeros(x.shape[2]), jac=True,
                      method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 0})  # fmt: skip
    return result.x, float(result.fun)


def test_batched_fit_matches_a_direct_lbfgs():
    features, answers, valid = option_problem()
    train = fold_masks(torch.arange(40) % 4, 4)  # 4 folds + all
    params = fit_probes(features, answers, valid, train, FitSettings(kind="per_option", l2=L2, tolerance=1e-7))
    mean, std = option_stats(features, valid, train)
    for fit in (0, 4):
        rows = train[fit].numpy()
        for layer in range(3):
            x = (features[layer].double() - mean[fit, layer].double()) / std[fit, layer].double()
            w, objective = scipy_fit(x[rows].numpy(), answers[rows].numpy(), valid[rows].numpy(), L2)
            np.testing.assert_allclose(params["w"][fit, layer].numpy(), w, rtol=1e-3, atol=1e-3)
            ours, _ = objective_of(x[rows].numpy(), answers[rows].numpy(), valid[rows].numpy(), L2,
                                   params["w"][fit, layer].double().numpy())  # fmt: skip
            assert ours == pytest.approx(objective, rel=1e-5)


def test_order_invariant_and_any_number_of_options():
    features, answers, valid = option_problem(n_slots=5)
    settings = FitSettings(kind="per_option", l2=L2)
    train = torch.ones(1, 40, dtype=torch.bool)
    params = {k: v[0] for k, v in fit_probes(features, answers, valid, train, settings).items()}
    probs = torch.softmax(predict(params, features, valid), -1)  # (n_layers, n_examples, n_slots)
    # Reverse each question's options: the fit is the same and its probabilities follow the options.
    n_choices = valid.sum(1)
    order = torch.stack([torch.cat([torch.arange(n - 1, -1, -1), torch.arange(n, 5)]) for n in n_choices])
    permuted = features.gather(2, order[None, :, :, None].expand_as(features))
    new_answers = (n_choices - 1 - answers).long()
    flipped = {k: v[0] for k, v in fit_probes(permuted, new_answers, valid, train, settings).items()}
    np.testing.assert_allclose(flipped["w"].numpy(), params["w"].numpy(), atol=1e-4)
    flipped_probs = torch.softmax(predict(flipped, permuted, valid), -1)
    np.testing.assert_allclose(flipped_probs.gather(2, order[None].expand_as(flipped_probs)).numpy(), probs.numpy(),
                               atol=1e-4)  # fmt: skip
    # A question with more options than any training question is scored with the same weights.
    wide, _, wide_valid = option_problem(n_slots=7, seed=1)
    wide_probs = torch.softmax(predict(params, wide, torch.ones_like(wide_valid)), -1)
    assert wide_probs.shape == (3, 40, 7) and torch.allclose(wide_probs.sum(-1), torch.ones(3, 40))


def test_cross_fit_reads_the_correct_option_in_deep_layers():
    features, answers, valid = option_problem(n_examples=120)
    fold_of = np.arange(120) % 5
    out_of_fold, refit = cross_fit(features, answers, valid, fold_of, FitSettings(kind="per_option", l2=L2))
    accuracy = (out_of_fold.argmax(-1) == answers).float().mean(1)  # (n_layers,)
    assert out_of_fold.shape == (3, 120, 5) and torch.isinf(out_of_fold[:, ~valid]).all()
    assert accuracy[2] > 0.9 and accuracy[0] < accuracy[2] and refit["w"].shape == (3, 12)
