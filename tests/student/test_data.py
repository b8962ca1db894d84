"""Student batches: the tokenizer's right padding gives exactly the tensors hand padding gave."""

from __future__ import annotations

import pytest
import torch

from stages.student.data import pad_batch
from tests.tiny_models import make_tokenizer

PROMPTS = ["Which is apple?\nA. apple\nB. stone\nAnswer:", "Hi", "The quick brown fox jumps over", "A"]


def hand_padded(token_ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The trainer's previous hand-written right padding, kept as the reference."""
    lengths = torch.tensor([len(ids) for ids in token_ids])
    input_ids = torch.full((len(token_ids), int(lengths.max())), pad_id, dtype=torch.long)  # (batch, seq)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
    return input_ids, attention_mask, lengths - 1


@pytest.mark.parametrize("own_side", ["right", "left"])
@pytest.mark.parametrize("special", [{}, {"pad_token": "[PAD]", "eos_token": "[EOS]"}])
def test_pad_batch_equals_hand_right_padding(own_side: str, special: dict[str, str]):
    tokenizer = make_tokenizer(vocab_size=280, **special)
    tokenizer.padding_side = own_side
    token_ids = tokenizer(PROMPTS, add_special_tokens=True)["input_ids"]
    assert len({len(ids) for ids in token_ids}) == len(PROMPTS)  # every prompt a different length
    padded = pad_batch(token_ids, tokenizer)
    expected = hand_padded(token_ids, tokenizer.pad_token_id)
    for got, want in zip(padded, expected, strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)
    assert [ids[-1] for ids in token_ids] == padded[0][torch.arange(len(PROMPTS)), padded[2]].tolist()
    assert tokenizer.padding_side == own_side  # right padding was asked for in the call only


def test_pad_batch_of_one_prompt_has_no_padding():
    tokenizer = make_tokenizer(vocab_size=280)
    token_ids = tokenizer(PROMPTS[:1])["input_ids"]
    input_ids, attention_mask, last = pad_batch(token_ids, tokenizer)
    assert input_ids.tolist() == token_ids and bool(attention_mask.all()) and last.tolist() == [len(token_ids[0]) - 1]
