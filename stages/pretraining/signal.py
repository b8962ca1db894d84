"""The teacher signal of one batch of packed sequences: what every distilling arm reads, cached or online.

Per position: the teacher's top-k next-token log-probabilities (log-softmax over the whole vocabulary, so the
kept mass is the sum of their exponentials) and their token ids, and the hidden state of one teacher layer
(Hugging Face's numbering: 0 = embedding output, i = block i's output). One function computes it for both the
`teacher_signal` stage and the online mode, so the two give the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from stages.core.errors import InputError
from stages.core.layers import resolve_layer


@dataclass
class TeacherSignal:
    """One batch's signal; every tensor (batch, seq_len, ...) on the teacher's device."""

    logprobs: torch.Tensor  # (batch, seq, k) float32, descending
    ids: torch.Tensor  # (batch, seq, k) int64
    hidden: torch.Tensor  # (batch, seq, d_teacher) float32

    def kept_mass(self) -> torch.Tensor:
        """(batch, seq) share of the teacher's probability the top-k keep."""
        return self.logprobs.exp().sum(dim=-1)


@dataclass
class Teacher:
    model: Any
    layer: int  # resolved teacher layer of the hidden states
    top_k: int
    device: torch.device

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor) -> TeacherSignal:
        """The signal of (batch, seq_len) token ids (on any device; moved to the teacher's)."""
        output = self.model(input_ids=input_ids.to(self.device), output_hidden_states=True, use_cache=False)
        log_probs = torch.log_softmax(output.logits.float(), dim=-1)  # (batch, seq, vocab)
        values, ids = log_probs.topk(self.top_k, dim=-1)
        return TeacherSignal(values, ids, output.hidden_states[self.layer].float())


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"pretrain.signal.device={setting} but no CUDA device is available")
    return torch.device(setting)


def load_signal_teacher(teacher_dir: Any, layer: int | str, top_k: int, device: str) -> Teacher:
    """The frozen teacher (a causal LM) with its resolved layer; top_k checked against its vocabulary."""
    from stages.modeling.loading import load_model

    target = pick_device(device)
    dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
    model, _, ref = load_model(teacher_dir, dtype=dtype)
    if ref.kind != "causal_lm":
        raise InputError(f"the teacher {ref.source} has no LM head: the pre-training study distils next-token logits")
    vocabulary = model.config.vocab_size
    if top_k > vocabulary:
        raise InputError(f"pretrain.signal.top_k={top_k} but the teacher's vocabulary has {vocabulary} tokens")
    resolved = resolve_layer(layer, model.config.num_hidden_layers + 1, "pretrain.signal.layer")
    model.to(target).eval()
    return Teacher(model, resolved, top_k, target)
