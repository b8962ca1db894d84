"""Cloze scoring (stages/modeling/cloze.py): batched scores equal a plain per-option forward, tokens, normalising."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.core.errors import InputError
from stages.modeling.cloze import ClozeScorer, normalised, score_examples, split_context, tokenize_cloze
from tests.tiny_models import make_tiny_causal_lm

TEMPLATE = "{question}\nAnswer:"
QUESTIONS = ["Which of these is a fruit?", "What colour is the sky on a clear day?", "Quick?"]
CHOICES = [
    ["apple", "a very long stone that lies in the river", "cloud"],  # options of different token lengths
    ["blue", "green", "the colour of the quick brown fox", "red"],
    ["yes", "no"],
]
IDS = ["q0", "q1", "q2"]


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = make_tiny_causal_lm(tmp_path_factory.mktemp("lm") / "weights")
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def plain_log_likelihood(model, tokenizer, question: str, option: str) -> float:
    """One unpadded forward of context + continuation: the definition the batched scorer must meet."""
    context = tokenizer(TEMPLATE.format(question=question), add_special_tokens=True)["input_ids"]
    continuation = tokenizer(" " + option, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
    return float(sum(log_probs[len(context) - 1 + j, token] for j, token in enumerate(continuation)))


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("batch_size", [2, 16])
def test_batched_scores_equal_a_plain_forward_per_option(model_and_tokenizer, padding_side, batch_size):
    model, tokenizer = model_and_tokenizer
    tokens = tokenize_cloze(tokenizer, QUESTIONS, CHOICES, TEMPLATE, IDS)
    assert len(set(tokens.n_continuation.tolist())) > 2  # the options really differ in token length
    scorer = ClozeScorer(model, tokenizer.pad_token_id, padding_side)
    assert scorer.padding_side == padding_side and scorer.takes_logits_to_keep
    scores = score_examples(scorer, tokens, 0, len(QUESTIONS), batch_size)
    assert scores.shape == (3, 26) and scores.dtype == np.float32
    for i, (question, options) in enumerate(zip(QUESTIONS, CHOICES, strict=True)):
        expected = [plain_log_likelihood(model, tokenizer, question, option) for option in options]
        np.testing.assert_allclose(scores[i, : len(options)], expected, rtol=1e-5, atol=1e-4)
        assert np.isnan(scores[i, len(options) :]).all()


def test_a_range_of_questions_is_scored_alone(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    tokens = tokenize_cloze(tokenizer, QUESTIONS, CHOICES, TEMPLATE, IDS)
    scorer = ClozeScorer(model, tokenizer.pad_token_id, "left")
    whole = score_examples(scorer, tokens, 0, 3, 4)
    np.testing.assert_allclose(score_examples(scorer, tokens, 1, 3, 4), whole[1:], rtol=1e-5, atol=1e-5)


def test_tokens_share_the_context_and_append_the_continuation(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    tokens = tokenize_cloze(tokenizer, QUESTIONS, CHOICES, TEMPLATE, IDS)
    assert tokens.first.tolist() == [0, 3, 7, 9] and tokens.option.tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1]
    context = tokenizer(TEMPLATE.format(question=QUESTIONS[1]))["input_ids"]
    for sequence, option in zip(range(3, 7), CHOICES[1], strict=True):
        continuation = tokenizer(" " + option, add_special_tokens=False)["input_ids"]
        assert tokens.input_ids[sequence].tolist() == context + continuation
        assert tokens.n_continuation[sequence] == len(continuation)
    assert tokens.option_chars[1, :4].tolist() == [4, 5, 33, 3] and np.isnan(tokens.option_chars[1, 4:]).all()


def test_normalised_divides_by_the_option_characters(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    tokens = tokenize_cloze(tokenizer, QUESTIONS, CHOICES, TEMPLATE, IDS)
    log_likelihood = np.full((2, 26), np.nan, dtype=np.float32)
    log_likelihood[:, :2] = [[-8.0, -10.0], [-3.0, -6.0]]
    np.testing.assert_allclose(normalised(log_likelihood, tokens, start=1)[:, :2], [[-2.0, -2.0], [-1.0, -3.0]])


def test_trailing_whitespace_of_the_context_moves_to_the_continuation():
    assert split_context("Q?", "{question}\nAnswer: ") == ("Q?\nAnswer:", " ")
    assert split_context("Q?", "{question}\nAnswer:") == ("Q?\nAnswer:", "")


def test_an_option_without_tokens_is_named(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer

    class Empty:  # a tokenizer that loses the continuation entirely
        def __call__(self, texts, add_special_tokens=True, **kwargs):
            if add_special_tokens:
                return tokenizer(texts, add_special_tokens=True, **kwargs)
            return {"input_ids": [[] for _ in texts]}

    with pytest.raises(InputError, match="example q0: option 0 tokenises to nothing"):
        tokenize_cloze(Empty(), QUESTIONS[:1], CHOICES[:1], TEMPLATE, IDS[:1])
