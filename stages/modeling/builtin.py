"""Builtin teacher and student: a byte-level BPE tokenizer and a tiny Llama pretrained here on the world's corpus.

Each role trains its OWN tokenizer (its own vocabulary size), so the default pipeline already exercises
tokenizer-agnostic distillation. Byte-level BPE encodes any UTF-8 text, so builtin models also run (badly)
on ARC or MMLU. Training is deterministic on CPU for a given torch version and thread count.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from stages.core.errors import InputError
from stages.sources.builtin_world import CorpusMix, TaskConfig, World, build_world, sample_document
from stages.sources.prompts import LETTERS

log = logging.getLogger(__name__)
EOS = "<|endoftext|>"
N_TOKENIZER_DOCUMENTS = 4000  # documents the BPE merges are learned from (a sample of the role's corpus)


@dataclass(frozen=True)
class BuiltinModelConfig:
    """The `builtin.teacher` or `builtin.student` section of params.yaml."""

    d_model: int = 64
    """Hidden size."""
    n_layers: int = 2
    """Transformer blocks."""
    n_heads: int = 2
    """Attention heads (d_model / n_heads must be even: rotary embeddings)."""
    vocab_size: int = 384
    """BPE vocabulary (bytes + merges + EOS); teacher and student differ on purpose."""
    steps: int = 300
    """Pretraining steps."""
    batch_size: int = 32
    """Documents per pretraining step."""
    lr: float = 3.0e-3
    """Peak AdamW learning rate (linear warmup over 5% of steps, cosine decay)."""
    mc_fraction: float = 0.0
    """Share of pretraining documents that are answered MC questions (0: facts only)."""
    letter_fraction: float = 0.0
    """Of those, share answered by letter."""
    text_fraction: float = 0.0
    """Of those, share answered by the option's text; the rest by option number."""
    letter_bias: float = 0.0
    """Of letter answers, share replaced by "A" (makes the teacher's letter outputs brittle)."""

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "vocab_size", "steps", "batch_size"):
            value = getattr(self, name)
            if value < 1:
                raise InputError(f"params.yaml: builtin.<role>.{name}={value} must be >= 1")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise InputError(
                f"params.yaml: builtin.<role>.d_model={self.d_model} must split into n_heads={self.n_heads} heads "
                "of even size"
            )
        if self.vocab_size < 300:
            raise InputError(
                f"params.yaml: builtin.<role>.vocab_size={self.vocab_size}: needs >= 300 (256 bytes + letters)"
            )
        if not 0 < self.lr < 1:
            raise InputError(f"params.yaml: builtin.<role>.lr={self.lr!r} must be in (0, 1)")
        CorpusMix(
            self.mc_fraction, self.letter_fraction, self.text_fraction, self.letter_bias
        )  # validates the fractions

    @property
    def mix(self) -> CorpusMix:
        return CorpusMix(self.mc_fraction, self.letter_fraction, self.text_fraction, self.letter_bias)


def build_tokenizer(documents: list[str], vocab_size: int):
    """Byte-level BPE trained on `documents`; " A".." Z" (and "A".."Z") are single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    # The option letters follow "Answer:" with a space; repeating the alphabet makes " A".." Z" the first merges.
    alphabet = [" ".join(" " + letter for letter in LETTERS)] * (20 * len(documents) + 1000)
    tokenizer.train_from_iterator(alphabet + documents, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS)
    for text in (*LETTERS, *(" " + letter for letter in LETTERS)):
        if len(wrapped.encode(text)) != 1:
            raise InputError(f"builtin tokenizer: {text!r} is not a single token; raise builtin.<role>.vocab_size")
    return wrapped


def build_model(config: BuiltinModelConfig, tokenizer):
    return new_llama(config.d_model, config.n_layers, config.n_heads, tokenizer)


def new_llama(d_model: int, n_layers: int, n_heads: int, tokenizer):
    """A freshly initialised Llama-style causal LM over `tokenizer`'s vocabulary (MLP width 2 x d_model, tied
    embeddings): the builtin models' architecture, and the pre-training study's students."""
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_heads,
        max_position_embeddings=2048,  # rotary, no weights depend on it: room for long ARC/AQuA/MMLU prompts
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(llama)


def pretrain(model, tokenizer, world: World, config: BuiltinModelConfig, rng: random.Random) -> list[float]:
    """Next-token training on fresh documents each step; returns the per-step losses."""
    import torch
    from tqdm import tqdm
    from transformers import get_cosine_schedule_with_warmup

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01, betas=(0.9, 0.98))
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, config.steps // 20), config.steps)
    losses = []
    model.train()
    for _ in tqdm(range(config.steps), desc="pretrain", mininterval=5, leave=False):
        texts = [sample_document(world, config.mix, rng) + EOS for _ in range(config.batch_size)]
        batch = tokenizer(texts, return_tensors="pt", padding=True)  # (batch, tokens)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    return losses


def train_builtin(config: BuiltinModelConfig, task: TaskConfig, seed: int, role: str, folder: Path) -> list[float]:
    """Build, pretrain and save_pretrained (safetensors) a builtin model and its tokenizer into `folder`."""
    import torch

    world = build_world(task, seed)
    rng = random.Random(f"builtin-pretrain:{seed}:{role}")  # independent of the dataset_splits questions
    tokenizer = build_tokenizer([sample_document(world, config.mix, rng) for _ in range(N_TOKENIZER_DOCUMENTS)],
                                config.vocab_size)  # fmt: skip
    torch.manual_seed(random.Random(f"builtin-init:{seed}:{role}").randrange(2**31))
    model = build_model(config, tokenizer)
    log.info("builtin %s: %d parameters, vocabulary %d", role, model.num_parameters(), len(tokenizer))
    losses = pretrain(model, tokenizer, world, config, rng)
    log.info("builtin %s: loss %.3f -> %.3f over %d steps", role, losses[0], losses[-1], len(losses))
    model.config.probekd_builtin = {"role": role, "seed": seed, "task": asdict(task), "config": asdict(config)}
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return losses
