"""Tiny randomly initialised Hugging Face models with real tokenizers, saved like hub checkpoints.

Tests load them back through the same `from_pretrained` path as any hub model.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = [
    "Which of these is a fruit?\nA. apple\nB. stone\nC. river\nD. cloud\nAnswer: A",
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "Question: what colour is the sky? Options follow. Answer:",
]


def make_tokenizer(vocab_size: int = 300, **special: str) -> PreTrainedTokenizerFast:
    """Byte-level BPE: encodes any UTF-8 text; every capital letter is one token."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = list(special.values()) or ["<|endoftext|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer=trainer)
    if not special:
        special = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special)


def make_tiny_causal_lm(
    folder: Path, *, d_model: int = 32, n_layers: int = 3, seed: int = 0, vocab_size: int = 300
) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer(vocab_size=vocab_size)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_encoder(
    folder: Path, *, d_model: int = 32, n_layers: int = 2, seed: int = 0, max_positions: int = 512
) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = make_tokenizer(pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]")
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        max_position_embeddings=max_positions,  # learned position table: longer inputs would index past it
        pad_token_id=tokenizer.pad_token_id,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
