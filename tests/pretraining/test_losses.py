"""The study's losses against references: top-k KD with k = vocabulary is the full forward KL; the FLOP rule
against torch's own FLOP counter on the builtin-sized models; each arm's loss weights over its steps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stages.pretraining.config import PretrainHLDConfig, PretrainKDConfig
from stages.pretraining.losses import ArmWeights, arm_loss, arm_weights, forward_flops, step_flops, topk_kd


def full_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The textbook forward KL over the whole vocabulary, T^2 x KL(softmax(t/T) || softmax(s/T)), per position."""
    target = F.softmax(teacher_logits / temperature, dim=-1)
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    kl = F.kl_div(log_student.flatten(0, 1), target.flatten(0, 1), reduction="batchmean")
    return temperature**2 * kl


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_topk_kd_with_k_the_vocabulary_equals_the_full_kl(temperature):
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 7, 50) * 3, torch.randn(3, 7, 50) * 3
    logprobs, ids = torch.log_softmax(teacher, dim=-1).topk(50, dim=-1)
    assert torch.allclose(
        topk_kd(student, logprobs, ids, temperature), full_kd(student, teacher, temperature), atol=1e-5
    )


def test_topk_kd_is_zero_when_the_student_matches_and_positive_otherwise():
    torch.manual_seed(1)
    teacher = torch.randn(2, 5, 40)
    logprobs, ids = torch.log_softmax(teacher, dim=-1).topk(40, dim=-1)
    assert topk_kd(teacher, logprobs, ids, 1.0).abs() < 1e-6
    logprobs, ids = torch.log_softmax(teacher, dim=-1).topk(8, dim=-1)  # truncated: renormalised over 8 ids
    assert topk_kd(torch.randn(2, 5, 40), logprobs, ids, 1.0) > 0


def test_arm_weights_over_the_steps():
    kd, hld = PretrainKDConfig(alpha=0.3, temperature=1.0), PretrainHLDConfig(gamma=0.07, hint_fraction=0.1)
    assert arm_weights("nll", None, None, 0, 100) == ArmWeights(1.0, 0.0, 0.0)
    assert arm_weights("kd", kd, None, 50, 100) == ArmWeights(0.3, 0.7, 0.0)
    assert arm_weights("hldc", kd, hld, 0, 100) == ArmWeights(0.3, 0.7, 0.07)
    assert arm_weights("hldf", kd, hld, 9, 100) == ArmWeights(0.0, 0.0, 1.0)  # hint phase: 10 steps
    assert arm_weights("hldf", kd, hld, 10, 100) == ArmWeights(0.3, 0.7, 0.0)


def test_arm_loss_sums_its_weighted_terms():
    torch.manual_seed(2)
    logits, ids = torch.randn(2, 6, 30), torch.randint(0, 30, (2, 6))
    topk = torch.log_softmax(torch.randn(2, 6, 30), dim=-1).topk(5, dim=-1)
    pair = (torch.randn(2, 6, 8), torch.randn(2, 6, 8))
    weights = ArmWeights(0.5, 0.5, 0.1)
    total, terms = arm_loss(weights, logits, ids, 2.0, (topk.values, topk.indices), pair)
    assert set(terms) == {"nll", "kd", "hld"}
    assert torch.isclose(total, 0.5 * terms["nll"] + 0.5 * terms["kd"] + 0.1 * terms["hld"])
    assert torch.isclose(terms["nll"], F.cross_entropy(logits[:, :-1].reshape(-1, 30), ids[:, 1:].reshape(-1)))
    with pytest.raises(ValueError, match="top-k"):
        arm_loss(weights, logits, ids, 2.0, None, pair)


@pytest.mark.parametrize("size", [(96, 3, 4), (48, 4, 4)], ids=["builtin-teacher", "default-student"])
def test_flop_rule_matches_torch_flop_counter_within_5_percent(size):
    """2 x params x tokens against the matmul FLOPs torch counts in a real forward (attention included) and 3x
    that for a training step (forward + backward), for the builtin teacher's and the default student's sizes."""
    from torch.utils.flop_counter import FlopCounterMode

    from stages.modeling.builtin import new_llama
    from tests.tiny_models import make_tokenizer

    d_model, n_layers, n_heads = size
    model = new_llama(d_model, n_layers, n_heads, make_tokenizer(vocab_size=768))
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, model.config.vocab_size, (4, 64))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids).logits.float().sum().backward()
    measured_training = counter.get_total_flops()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids)
    measured_forward = counter.get_total_flops()
    assert forward_flops(params, ids.numel()) == pytest.approx(measured_forward, rel=0.05)
    assert step_flops(params, 0, ids.numel(), False) == pytest.approx(measured_training, rel=0.05)
    assert step_flops(params, 10, ids.numel(), True) == step_flops(params, 0, ids.numel(), False) + 2 * 10 * 256


def test_padding_positions_do_not_count():
    """Under document packing the positions whose next token is padding are masked out of NLL, KD and HLD."""
    from stages.pretraining.trainer import prediction_mask

    torch.manual_seed(3)
    logits, ids = torch.randn(2, 6, 30), torch.randint(0, 30, (2, 6))
    mask = prediction_mask(torch.tensor([4, 6]).numpy(), 6)
    assert mask.tolist() == [[True, True, True, False, False, False], [True] * 5 + [False]]
    topk = torch.log_softmax(torch.randn(2, 6, 30), dim=-1).topk(5, dim=-1)
    pair = (torch.randn(2, 6, 8), torch.randn(2, 6, 8))
    weights = ArmWeights(0.5, 0.5, 0.1)
    _, terms = arm_loss(weights, logits, ids, 1.0, (topk.values, topk.indices), pair, mask)
    changed = logits.clone()
    changed[0, 3:] = torch.randn(3, 30) * 10  # positions predicting padding
    ids_changed = ids.clone()
    ids_changed[0, 4:] = 0  # the padding itself
    moved = (pair[0].clone(), pair[1])
    moved[0][0, 3:] = 100.0
    _, again = arm_loss(weights, changed, ids_changed, 1.0, (topk.values, topk.indices), moved, mask)
    for name in terms:
        assert torch.isclose(terms[name], again[name]), name
    expected = (F.cross_entropy(logits[0, :3], ids[0, 1:4], reduction="sum") + F.cross_entropy(
        logits[1, :5], ids[1, 1:], reduction="sum")) / 8  # fmt: skip
    assert torch.isclose(terms["nll"], expected)
