"""The pre-training arms' losses, per position of packed sequences, and their compute accounting.

- nll: next-token cross-entropy.
- kd: alpha x NLL + (1 - alpha) x T^2 x KL(q_T || p_T), q_T the teacher's top-k log-probabilities at temperature T
  renormalised over the kept ids (the study's forward KL to the teacher's distribution; with k = the vocabulary it
  is the full distribution), p_T the student's softmax at T over its whole vocabulary, read at the kept ids.
- hldc: kd + gamma x nMSE(W h_student, h_teacher) at every position (nMSE from stages/student/losses.py).
- hldf: the hint term alone for the first hint_fraction of the steps, then kd.

FLOPs follow the 2 x params x tokens rule for a forward (Kaplan et al.), 3x that for a training step; a distilling
arm also pays the teacher's forward over its tokens, whether in its steps (online) or once in the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stages.pretraining.config import PretrainHLDConfig, PretrainKDConfig
from stages.student.losses import normalized_mse


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `values` over the True entries of `mask` (every entry without one)."""
    if mask is None:
        return values.mean()
    return (values * mask).sum() / mask.sum().clamp_min(1)


def next_token_nll(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean NLL of tokens 1.. given the ones before; logits (batch, seq, vocab), input_ids (batch, seq); `mask`
    (batch, seq): whether position p's prediction of token p + 1 counts (its last column is never read)."""
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), input_ids[:, 1:], reduction="none")
    return masked_mean(nll, None if mask is None else mask[:, :-1])


def topk_kd(
    logits: torch.Tensor,
    topk_logprobs: torch.Tensor,
    topk_ids: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 x mean over positions of KL(teacher top-k at T, renormalised || student at T).

    logits (batch, seq, vocab); topk_logprobs, topk_ids (batch, seq, k): the teacher's log-softmax at T = 1.
    """
    target_log = torch.log_softmax(topk_logprobs.float() / temperature, dim=-1)  # renormalised over the k ids
    student_log = torch.log_softmax(logits.float() / temperature, dim=-1).gather(-1, topk_ids.long())
    per_position = (target_log.exp() * (target_log - student_log)).sum(dim=-1)  # (batch, seq)
    return temperature**2 * masked_mean(per_position, mask)


@dataclass(frozen=True)
class ArmWeights:
    """The weights of one step's loss terms; zero skips a term."""

    nll: float = 1.0
    kd: float = 0.0
    hld: float = 0.0


def arm_weights(
    arm: str, kd: PretrainKDConfig | None, hld: PretrainHLDConfig | None, step: int, steps: int
) -> ArmWeights:
    """The arm's loss weights at `step` of `steps`."""
    if arm == "nll":
        return ArmWeights()
    assert kd is not None
    distil = ArmWeights(nll=kd.alpha, kd=1.0 - kd.alpha)
    if arm == "kd":
        return distil
    assert hld is not None
    if arm == "hldc":
        return ArmWeights(nll=kd.alpha, kd=1.0 - kd.alpha, hld=hld.gamma)
    if step < round(hld.hint_fraction * steps):  # hldf: the hint phase
        return ArmWeights(nll=0.0, kd=0.0, hld=1.0)
    return distil


def arm_loss(
    weights: ArmWeights,
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    temperature: float = 1.0,
    topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    hidden_pair: tuple[torch.Tensor, torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(weighted sum, {term: unweighted value}); `topk` = (log-probs, ids), `hidden_pair` = (W h_student, h_teacher),
    both (batch, seq, ...); `mask` (batch, seq): the positions whose predictions (and hidden states) count, those whose
    next token is not padding (None: every position for KD and HLD, all but the last for NLL)."""
    terms: dict[str, torch.Tensor] = {}
    if weights.nll:
        terms["nll"] = next_token_nll(logits, input_ids, mask)
    if weights.kd:
        if topk is None:
            raise ValueError("the KD term needs the teacher's top-k")
        terms["kd"] = topk_kd(logits, *topk, temperature, mask)
    if weights.hld:
        if hidden_pair is None:
            raise ValueError("the HLD term needs projected student and teacher hidden states")
        projected, teacher = hidden_pair
        keep = slice(None) if mask is None else mask.flatten()  # padding positions are not matched
        terms["hld"] = normalized_mse(projected.flatten(0, 1)[keep], teacher.flatten(0, 1)[keep])
    total = sum((getattr(weights, name) * value for name, value in terms.items()), logits.new_zeros(()).float())
    return total, terms


def forward_flops(n_params: int, n_tokens: int) -> float:
    """FLOPs of a forward over `n_tokens` tokens: 2 x params x tokens."""
    return 2.0 * n_params * n_tokens


def step_flops(student_params: int, teacher_params: int, n_tokens: int, uses_teacher: bool) -> float:
    """One training step: the student's forward and backward (3 forwards), plus the teacher's forward if it is used."""
    return 3 * forward_flops(student_params, n_tokens) + (
        forward_flops(teacher_params, n_tokens) if uses_teacher else 0
    )
