"""The `pretrain` section of params.yaml: one typed config per sub-section, each read only by the stages that need it
(dvc.yaml lists exactly those keys), so changing `pretrain.hld.gamma` reruns the HLD arms and nothing upstream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stages.core.errors import InputError

ARMS = ("nll", "kd", "hldc", "hldf")


def at_least(where: str, names: tuple[str, ...], config: object, minimum: float) -> None:
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            raise InputError(f"params.yaml: {where}.{name}={value} must be >= {minimum}")


@dataclass(frozen=True)
class PretrainSeedConfig:
    """`pretrain.seed`."""

    seed: int = 0
    """Student initialisation and batch order of every arm (the corpus and the teacher signal stay fixed: vary it
    to measure training noise)."""

    def __post_init__(self) -> None:
        at_least("pretrain", ("seed",), self, 0)


@dataclass(frozen=True)
class CorpusConfig:
    """`pretrain.corpus`: the text, tokenised with the teacher's tokenizer and packed into fixed-length sequences."""

    source: str = "builtin"
    """builtin (the builtin teacher's own corpus: facts and answered questions of the builtin world) | a .txt,
    .jsonl or .parquet file or a folder of them under data/raw/ | hub:<dataset id> (datasets streaming, e.g.
    hub:allenai/c4)."""
    hub_config: str | None = None
    """Config name of a hub dataset (en for allenai/c4); null for none."""
    text_field: str = "text"
    """Field holding the text in jsonl, parquet and hub rows (a .txt file is one document per blank-line block)."""
    seq_len: int = 64
    """Tokens per packed sequence (documents joined by the EOS token, cut at this length)."""
    train_tokens: int = 262144
    """Training tokens to pack (rounded down to whole sequences): the token budget read from the source."""
    val_tokens: int = 16384
    """Held-out validation tokens, from documents that never enter the training sequences."""
    packing: Literal["document", "concat"] = "document"
    """document: one document per sequence (a longer one is cut), EOS-padded, the padding masked out of every loss
    and metric (for teachers trained on single documents from their start, as the builtin one: measured, its val
    log-perplexity is 4.0 on concat-packed text, 2.4 with several documents per sequence) | concat: documents joined
    end to end across sequence boundaries (teachers trained on packed text, C4 scale)."""
    shuffle_buffer: int = 10000
    """Hub streaming only: documents in the shuffle buffer (local and builtin documents are shuffled whole)."""
    seed: int = 0
    """Document order and packing; the corpus is a pure function of the source, the tokenizer and this seed."""

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise InputError(
                "params.yaml: pretrain.corpus.source is empty; use builtin, a path under data/raw or hub:<id>"
            )
        at_least("pretrain.corpus", ("seq_len",), self, 2)
        at_least("pretrain.corpus", ("shuffle_buffer",), self, 1)
        at_least("pretrain.corpus", ("seed",), self, 0)
        for name in ("train_tokens", "val_tokens"):
            if getattr(self, name) < self.seq_len:
                raise InputError(
                    f"params.yaml: pretrain.corpus.{name}={getattr(self, name)} must be >= seq_len={self.seq_len} "
                    "(at least one sequence)"
                )


@dataclass(frozen=True)
class SignalConfig:
    """`pretrain.signal`: the teacher signal every distilling arm reads, cached once (or computed online)."""

    top_k: int = 32
    """Teacher log-probabilities kept per position (the k most likely tokens and their ids)."""
    layer: Literal["middle"] | int = "middle"
    """Teacher layer whose hidden states the HLD arms match: middle or an index (0 = embedding output, negative from
    the last)."""
    dtype: Literal["float16", "float32"] = "float16"
    """Store dtype of the log-probabilities and hidden states."""
    batch_size: int = 64
    """Sequences per teacher forward."""
    shard_sequences: int = 256
    """Sequences per zarr shard (one file per array and shard; the unit of resume)."""
    online: bool = False
    """true: cache nothing and run the teacher inside every distilling arm's steps (corpora too large to cache)."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N for the teacher's forward passes."""

    def __post_init__(self) -> None:
        at_least("pretrain.signal", ("top_k", "batch_size", "shard_sequences"), self, 1)
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise InputError(f"params.yaml: pretrain.signal.device={self.device!r} must be auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class StudentConfig:
    """`pretrain.student`: the student, initialised from scratch (Llama-style, the teacher's vocabulary)."""

    d_model: int = 48
    """Hidden size (the MLP is 2 x d_model wide; embeddings tied to the LM head)."""
    n_layers: int = 4
    """Transformer blocks."""
    n_heads: int = 4
    """Attention heads (d_model / n_heads must be even: rotary embeddings)."""

    def __post_init__(self) -> None:
        at_least("pretrain.student", ("d_model", "n_layers", "n_heads"), self, 1)
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise InputError(
                f"params.yaml: pretrain.student.d_model={self.d_model} must split into n_heads={self.n_heads} heads "
                "of even size"
            )


@dataclass(frozen=True)
class PretrainTrainConfig:
    """`pretrain.train`: what every arm shares (one trainer, data order, optimiser and schedule)."""

    budget: Literal["tokens", "flops"] = "tokens"
    """tokens: every arm trains `steps` steps | flops: every arm gets the FLOPs of `steps` steps of the KD arm
    (student training + the teacher's forward), so NLL, which pays no teacher, trains on more tokens."""
    steps: int = 400
    """Optimiser steps (of the KD arm, under budget: flops)."""
    batch_size: int = 32
    """Sequences per step (global, over all processes)."""
    lr: float = 3.0e-3
    """Peak AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_fraction: float = 0.05
    """Linear warm-up over this share of the steps, then cosine decay to 0."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    eval_every: int = 50
    """Validation log-perplexity every this many steps (and at the end): the curves against tokens and FLOPs."""
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    """auto (bf16 on a GPU that supports it, else no) | no | fp16 | bf16."""

    def __post_init__(self) -> None:
        at_least("pretrain.train", ("steps", "batch_size", "eval_every"), self, 1)
        for name in ("lr", "max_grad_norm"):
            if getattr(self, name) <= 0:
                raise InputError(f"params.yaml: pretrain.train.{name}={getattr(self, name)} must be > 0")
        at_least("pretrain.train", ("weight_decay",), self, 0)
        if not 0 <= self.warmup_fraction <= 1:
            raise InputError(f"params.yaml: pretrain.train.warmup_fraction={self.warmup_fraction} must be in [0, 1]")


@dataclass(frozen=True)
class PretrainKDConfig:
    """`pretrain.kd`: alpha x NLL + (1 - alpha) x T^2 x KL(teacher top-k at T || student at T), per position."""

    alpha: float = 0.5
    """Weight of the next-token NLL; (1 - alpha) on the KD term."""
    temperature: float = 1.0
    """KD temperature T (the KL term is scaled by T^2)."""

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise InputError(f"params.yaml: pretrain.kd.alpha={self.alpha} must be in [0, 1]")
        if self.temperature <= 0:
            raise InputError(f"params.yaml: pretrain.kd.temperature={self.temperature} must be > 0")


@dataclass(frozen=True)
class PretrainHLDConfig:
    """`pretrain.hld`: nMSE(W h_student[student_layer], h_teacher[pretrain.signal.layer]) at every position."""

    gamma: float = 0.1
    """hldc: weight of the hint term added to the KD loss (the study used 0.05-0.10, second-hand)."""
    student_layer: Literal["middle"] | int = "middle"
    """middle, or a student layer index (0 = embedding output, negative from the last)."""
    hint_fraction: float = 0.05
    """hldf: share of the steps in the hint phase (the hint term alone), before KD (a few percent in the study)."""

    def __post_init__(self) -> None:
        if self.gamma < 0:
            raise InputError(f"params.yaml: pretrain.hld.gamma={self.gamma} must be >= 0")
        if not 0 <= self.hint_fraction < 1:
            raise InputError(f"params.yaml: pretrain.hld.hint_fraction={self.hint_fraction} must be in [0, 1)")


@dataclass(frozen=True)
class PretrainEvalConfig:
    """`pretrain.eval`: held-out perplexity and zero-shot downstream accuracy of each arm."""

    batch_size: int = 64
    """Sequences (or cloze options) per forward."""
    position_buckets: int = 4
    """Log-perplexity is also reported per bucket of positions within a sequence (early vs late context)."""

    def __post_init__(self) -> None:
        at_least("pretrain.eval", ("batch_size", "position_buckets"), self, 1)


@dataclass(frozen=True)
class ArmSetup:
    """Everything `pretrain@<arm>` reads from params.yaml, checked."""

    arm: str
    seed: int
    student: StudentConfig
    train: PretrainTrainConfig
    kd: PretrainKDConfig | None
    hld: PretrainHLDConfig | None

    @property
    def uses_teacher(self) -> bool:
        return self.arm != "nll"
