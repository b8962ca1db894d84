"""Tiny randomly initialised Hugging Face models with real tokenizers, saved like hub checkpoints.

Tests load them back through the same `from_pretrained` path as any hub model.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = [
    "Which of these is a fruit?\nA. apple\nB. stone\nC. river\nD. cloud\nAnswer: A",
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "Question: what colour is the sky? Options follow. Answer:",
]

ANSWERS = [f"Answer: {letter}" for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]  # every letter a token, as in real ones


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


def make_styled_tokenizer(style: str, vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A tokenizer of one of the families' styles, trained on CORPUS:
    - `byte_level`: GPT-2 / Llama 3 / Qwen byte-level BPE (a leading space is `Ġ`), no special tokens added;
    - `metaspace`: SentencePiece-style BPE (Llama 2, Mistral, Gemma: a space is `▁` and one is prepended, so ` A`
      alone is `▁` `▁A` while `Answer: A` ends in `▁A`), BOS prepended;
    - `wordpiece`: BERT-style WordPiece, `[CLS] a [SEP]` and `[CLS] a [SEP] b [SEP]` for pairs.
    """
    if style == "byte_level":
        return make_tokenizer(vocab_size=vocab_size)
    if style == "metaspace":
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
        # Llama 2's tokenizer.json: the normalizer prepends `▁` and turns spaces into `▁`; pieces split before `▁`.
        tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        specials = ["<unk>", "<s>", "</s>", "<pad>"]
        alphabet = sorted(set("".join(CORPUS)) | {"▁"})
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet)
        tokenizer.train_from_iterator(CORPUS * 20 + ANSWERS * 20, trainer=trainer)
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
        )
        return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                       unk_token="<unk>", pad_token="<pad>")  # fmt: skip
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    tokenizer.train_from_iterator(CORPUS * 20 + ANSWERS * 20, trainer=pieces)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")  # fmt: skip
