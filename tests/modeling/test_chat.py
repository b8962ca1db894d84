"""prompt.chat_template: the teacher's store and the student's prompts read the model's own chat template, the answer
at the assistant's first token, the letters as that tokenizer writes them there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stages.core.errors import InputError
from stages.modeling.chat import assistant_start, chat_prompts, in_chat
from stages.modeling.letters import letter_token_ids
from stages.modeling.loading import load_model, resolve
from stages.sources.prompts import PromptConfig, format_prompt, option_line_ends
from stages.sources.schema import read_split, write_split
from stages.store.extract_config import ExtractConfig, ExtractSetup
from stages.store.extraction import run as extract_split
from stages.store.reader import HiddenStore
from stages.student.data import encode_split
from tests.test_extract import make_rows
from tests.tiny_models import make_tokenizer

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT = PromptConfig(chat_template=True)


def chat_tokenizer():
    tokenizer = make_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    return tokenizer


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("chat")
    tokenizer = chat_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(root / "weights")
    tokenizer.save_pretrained(root / "weights")
    resolve(str(root / "weights"), revision=None, trust_remote_code=False).save(root)
    write_split(make_rows(7), root / "test.parquet")
    return root


def test_teacher_store_reads_the_chat_template(chat_dir, tmp_path):
    config = ExtractConfig(batch_size=4, shard_examples=4, device="cpu")
    split = read_split(chat_dir / "test.parquet")
    extract_split(ExtractSetup(CHAT, config), split, chat_dir, tmp_path / "c.zarr")
    store = HiddenStore.open(tmp_path / "c.zarr")
    model, tokenizer, _ = load_model(chat_dir, dtype=torch.float32)
    letters = store.attrs["letter_token_ids"]
    assert store.attrs["letter_rule"] == "chat"
    assert letters == [tokenizer.encode(in_chat(tokenizer, "x") + x, add_special_tokens=False)[-1] for x in "ABCD"]
    for row, (question, choices) in enumerate(zip(split.questions, split.choices, strict=True)):
        prompt = format_prompt(question, choices, CHAT)
        text = in_chat(tokenizer, prompt)
        assert text.endswith("<|im_start|>assistant\n")
        encoded = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        assert encoded["input_ids"][0, 0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # no second BOS
        ends = [text.index(prompt) + end for end in option_line_ends(question, choices, CHAT)]
        with torch.no_grad():
            output = model(**encoded, output_hidden_states=True)
        states = torch.stack(output.hidden_states)[:, 0]  # (layers, seq, d_model)
        np.testing.assert_allclose(np.stack([store.read_layer(i)[row] for i in range(3)]), states[:, -1].numpy(),
                                   rtol=2e-3, atol=2e-3)  # fmt: skip
        tokens = [encoded.char_to_token(end - 1) for end in ends]
        options = np.stack([store.read_option_layer(i, len(choices))[row] for i in range(3)])  # (layers, n, d)
        np.testing.assert_allclose(options, states[:, tokens].numpy(), rtol=2e-3, atol=2e-3)
        logits = store.option_logits()[row, : len(choices)]
        np.testing.assert_allclose(logits, output.logits[0, -1, letters[: len(choices)]].numpy(), atol=1e-4)


def test_student_prompts_use_its_own_template(chat_dir):
    tokenizer = chat_tokenizer()
    split = read_split(chat_dir / "test.parquet")
    encoded = encode_split(split, tokenizer, CHAT)
    first = in_chat(tokenizer, format_prompt(split.questions[0], split.choices[0], CHAT))
    assert encoded.token_ids[0] == tokenizer.encode(first, add_special_tokens=False)
    assert encode_split(split, tokenizer, PromptConfig()).token_ids[0] != encoded.token_ids[0]
    assert PromptConfig().digest != CHAT.digest


def test_a_tokenizer_without_a_chat_template_is_refused():
    tokenizer = make_tokenizer()
    with pytest.raises(InputError, match=r"^prompt.chat_template is true but the teacher's tokenizer .* has no chat "
                       r"template; set prompt.chat_template: false$"):  # fmt: skip
        chat_prompts(tokenizer, ["Q?\nA. x\nAnswer:"], "teacher")
    with pytest.raises(InputError, match="the student's tokenizer"):
        letter_token_ids(tokenizer, 4, "student", assistant_start(tokenizer, "student"))
