"""The student's losses, as pure torch functions of letter logits, targets and hidden states.

The student is scored by its next-token logits on the option letters at the answer position,
(batch, MAX_CHOICES), with slots beyond an example's choices masked to -inf. An arm's loss is a weighted
sum of terms (`LossWeights`): CE on gold answers, tempered KL to soft labels, and the HLD hint term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def mask_invalid(letter_logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """-inf on slots the question does not have, so softmax gives them probability exactly 0.

    letter_logits, valid: (batch, MAX_CHOICES).
    """
    return letter_logits.masked_fill(~valid, float("-inf"))


def cross_entropy(letter_logits: torch.Tensor, valid: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """Mean CE of the gold answers over the valid slots; answers (batch,) index into the slots."""
    return F.cross_entropy(mask_invalid(letter_logits.float(), valid), answers)


def temper(probs: torch.Tensor, valid: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^(1/T) renormalised over the valid slots: the soft label at temperature T.

    Equals softmax(log p / T), i.e. what tempering the logits that produced p would give. Zero
    probabilities stay zero (0^(1/T) = 0) and are kept out of the log.
    """
    log_p = torch.log(probs.float().clamp_min(0)).masked_fill(~valid | (probs <= 0), float("-inf"))
    return torch.softmax(log_p / temperature, dim=-1)


def tempered_kl(
    letter_logits: torch.Tensor, valid: torch.Tensor, target_probs: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 x mean over the batch of KL(p_target^T || p_student^T); the T^2 keeps gradients T-independent.

    Terms with p_target = 0 contribute 0 (0 log 0 = 0), including every invalid slot.
    """
    target = temper(target_probs, valid, temperature)  # (batch, MAX_CHOICES)
    student_log = torch.log_softmax(mask_invalid(letter_logits.float(), valid) / temperature, dim=-1)
    safe_student = student_log.masked_fill(target <= 0, 0.0)  # -inf x 0 would be NaN
    log_ratio = torch.log(target.clamp_min(torch.finfo(target.dtype).tiny)) - safe_student
    per_example = torch.where(target > 0, target * log_ratio, torch.zeros_like(target)).sum(dim=-1)
    return temperature**2 * per_example.mean()


def normalized_mse(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE after L2-normalising both vectors: scale-free, so a teacher with larger activations does not dominate.

    predicted, target: (batch, d_teacher). Mean over batch and dimensions.
    """
    return F.mse_loss(F.normalize(predicted.float(), dim=-1), F.normalize(target.float(), dim=-1))


@dataclass(frozen=True)
class LossWeights:
    """Weights of the terms of one arm's loss; a zero weight skips the term (and its inputs)."""

    ce: float = 1.0
    kd: float = 0.0
    hld: float = 0.0


def total_loss(
    weights: LossWeights,
    letter_logits: torch.Tensor,
    valid: torch.Tensor,
    answers: torch.Tensor,
    gold_rows: torch.Tensor,
    soft_labels: torch.Tensor | None = None,
    temperature: float = 1.0,
    projected_hidden: torch.Tensor | None = None,
    teacher_hidden: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(weighted sum, {term: unweighted value}) over one mixed batch of labeled and transfer rows.

    CE uses `gold_rows` only (the labeled rows: transfer gold is trained on by the oracle arm alone); KD and HLD use
    every row. letter_logits, valid, soft_labels: (batch, MAX_CHOICES); answers, gold_rows: (batch,).
    """
    terms: dict[str, torch.Tensor] = {}
    total = letter_logits.new_zeros((), dtype=torch.float32)
    if weights.ce:
        terms["ce"] = cross_entropy(letter_logits[gold_rows], valid[gold_rows], answers[gold_rows])
        total = total + weights.ce * terms["ce"]
    if weights.kd:
        if soft_labels is None:
            raise ValueError("the KD term needs soft labels")
        terms["kd"] = tempered_kl(letter_logits, valid, soft_labels, temperature)
        total = total + weights.kd * terms["kd"]
    if weights.hld:
        if projected_hidden is None or teacher_hidden is None:
            raise ValueError("the HLD term needs projected student and teacher hidden states")
        terms["hld"] = normalized_mse(projected_hidden, teacher_hidden)
        total = total + weights.hld * terms["hld"]
    return total, terms
