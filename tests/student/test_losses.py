"""The student's losses on tiny cases computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from stages.student.losses import (
    LossWeights,
    cross_entropy,
    normalized_mse,
    temper,
    tempered_kl,
    total_loss,
)


def padded(values: list[list[float]], width: int = 26, fill: float = 0.0) -> torch.Tensor:
    return torch.tensor([row + [fill] * (width - len(row)) for row in values])


def valid_of(n_choices: list[int], width: int = 26) -> torch.Tensor:
    return torch.arange(width)[None, :] < torch.tensor(n_choices)[:, None]


def test_cross_entropy_by_hand_ignores_invalid_slots():
    # Slot 2 is invalid and has a huge logit: it must not take any probability.
    logits = padded([[0.0, math.log(3.0), 100.0]], fill=50.0)
    valid = valid_of([2])
    loss = cross_entropy(logits, valid, torch.tensor([1]))
    assert loss.item() == pytest.approx(-math.log(3 / 4), abs=1e-6)
    loss = cross_entropy(logits, valid, torch.tensor([0]))
    assert loss.item() == pytest.approx(-math.log(1 / 4), abs=1e-6)


def test_temper_renormalises_power_over_valid_slots():
    probs = padded([[0.8, 0.2, 0.0]])
    tempered = temper(probs, valid_of([3]), temperature=2.0)
    a, b = math.sqrt(0.8), math.sqrt(0.2)
    assert tempered[0, :3].tolist() == pytest.approx([a / (a + b), b / (a + b), 0.0], abs=1e-6)
    assert tempered[0, 3:].abs().sum().item() == 0.0
    assert temper(probs, valid_of([3]), 1.0)[0, :2].tolist() == pytest.approx([0.8, 0.2], abs=1e-6)


def test_tempered_kl_by_hand_with_t_squared():
    temperature = 2.0
    target = padded([[0.8, 0.2]])
    logits = padded([[0.0, 2.0]], fill=30.0)  # invalid slots carry large logits, masked away
    valid = valid_of([2])
    q = [math.exp(0.0), math.exp(1.0)]  # student logits / T
    q = [v / sum(q) for v in q]
    p = [math.sqrt(0.8), math.sqrt(0.2)]
    p = [v / sum(p) for v in p]
    expected = temperature**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert tempered_kl(logits, valid, target, temperature).item() == pytest.approx(expected, rel=1e-5)


def test_tempered_kl_is_zero_at_the_target_and_handles_zero_probabilities():
    target = padded([[0.0, 0.25, 0.75]])
    logits = torch.log(target.clamp_min(1e-30))  # student = target on the non-zero slots
    logits[0, 0] = -80.0
    loss = tempered_kl(logits, valid_of([3]), target, temperature=1.0)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_normalized_mse_is_scale_free_by_hand():
    predicted = torch.tensor([[3.0, 0.0]])
    target = torch.tensor([[0.0, 10.0]])
    # unit vectors (1, 0) and (0, 1): squared error 1 + 1 over 2 dimensions
    assert normalized_mse(predicted, target).item() == pytest.approx(1.0)
    assert normalized_mse(predicted * 7, predicted).item() == pytest.approx(0.0, abs=1e-7)


def test_total_loss_weights_terms_and_uses_labeled_rows_for_ce_only():
    logits = padded([[0.0, 0.0], [5.0, -5.0]])
    valid = valid_of([2, 2])
    answers = torch.tensor([0, 1])  # row 1 is a transfer row whose gold would be expensive: must be ignored
    is_labeled = torch.tensor([True, False])
    soft = padded([[0.5, 0.5], [0.5, 0.5]])
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    total, terms = total_loss(
        LossWeights(ce=0.25, kd=0.75, hld=0.1),
        logits,
        valid,
        answers,
        is_labeled,
        soft_labels=soft,
        temperature=1.0,
        projected_hidden=hidden,
        teacher_hidden=-hidden,
    )
    assert terms["ce"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert terms["kd"].item() == pytest.approx(tempered_kl(logits, valid, soft, 1.0).item())
    assert terms["hld"].item() == pytest.approx(2.0)  # opposite unit vectors: (2^2 + 0) / 2
    expected = 0.25 * terms["ce"] + 0.75 * terms["kd"] + 0.1 * terms["hld"]
    assert total.item() == pytest.approx(expected.item())
    total_gold, terms_gold = total_loss(LossWeights(), logits, valid, answers, is_labeled)
    assert set(terms_gold) == {"ce"} and total_gold.item() == pytest.approx(math.log(2), abs=1e-6)


def test_gradients_never_reach_invalid_slots():
    logits = padded([[0.3, -0.2, 1.0]], fill=4.0).requires_grad_()
    valid = valid_of([2])
    loss = cross_entropy(logits, valid, torch.tensor([0])) + tempered_kl(logits, valid, padded([[0.6, 0.4]]), 2.0)
    loss.backward()
    assert torch.all(logits.grad[0, 2:] == 0)
    assert torch.all(torch.isfinite(logits.grad))
