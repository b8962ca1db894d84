"""One trainer for every arm: a student from scratch, the same batch order, optimiser and schedule; only the loss
terms and (under `budget: flops`) the number of steps differ.

Data parallel under `accelerate launch` / `torchrun` (PROBEKD_LAUNCHER): every process draws the same global batch
of `batch_size` sequences and trains on its share; DDP averages the gradients.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stages.core.errors import InputError
from stages.core.launch import resolve_precision
from stages.core.layers import resolve_layer
from stages.pretraining.config import ArmSetup
from stages.pretraining.losses import ArmWeights, arm_loss, step_flops
from stages.pretraining.signal import Teacher

HLD_ARMS = ("hldc", "hldf")


@dataclass
class Signal:
    """Where the teacher signal comes from: cached arrays (in memory) or the teacher itself (online)."""

    arrays: dict[str, np.ndarray] | None
    teacher: Teacher | None
    teacher_params: int
    d_teacher: int

    def batch(self, rows: np.ndarray, input_ids: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        if self.teacher is not None:
            signal = self.teacher(input_ids)
            values = {"topk_logprobs": signal.logprobs, "topk_ids": signal.ids, "hidden": signal.hidden}
            return {name: value.to(device) for name, value in values.items()}
        assert self.arrays is not None
        return {
            name: torch.from_numpy(array[rows].astype(np.float32 if name != "topk_ids" else np.int64)).to(device)
            for name, array in self.arrays.items()
        }


def batch_order(n_sequences: int, batch_size: int, seed: int):
    """Endless global batches of sequence indices: a seeded permutation per epoch, the same for every arm."""
    rng = np.random.default_rng(seed)
    pending = np.zeros(0, dtype=np.int64)
    while True:
        while len(pending) < batch_size:
            pending = np.concatenate([pending, rng.permutation(n_sequences)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def arm_steps(setup: ArmSetup, student_params: int, extra_params: int, teacher_params: int, tokens: int) -> int:
    """Steps of this arm: `steps` (budget: tokens), or as many as the KD arm's FLOPs over `steps` buy (budget: flops).

    `extra_params`: the HLD projection's, trained beside the student; `tokens`: tokens per step.
    """
    if setup.train.budget == "tokens":
        return setup.train.steps
    budget = setup.train.steps * step_flops(student_params, teacher_params, tokens, True)
    per_step = step_flops(student_params + extra_params, teacher_params, tokens, setup.uses_teacher)
    return max(1, math.floor(budget / per_step + 1e-9))


def build_student(setup: ArmSetup, tokenizer: Any, d_teacher: int) -> tuple[Any, torch.nn.Linear | None]:
    """The from-scratch student (seeded) and, for HLD arms, its projection d_student -> d_teacher."""
    from stages.modeling.builtin import new_llama

    torch.manual_seed(setup.seed)
    config = setup.student
    model = new_llama(config.d_model, config.n_layers, config.n_heads, tokenizer)
    projection = None
    if setup.arm in HLD_ARMS:
        projection = torch.nn.Linear(config.d_model, d_teacher, bias=False)
    return model, projection


def hint_layer(setup: ArmSetup) -> int | None:
    if setup.hld is None:
        return None
    n_layers = setup.student.n_layers + 1
    return resolve_layer(setup.hld.student_layer, n_layers, "pretrain.hld.student_layer", whose="the student")


def make_accelerator(setup: ArmSetup) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    # hldf leaves the projection unused after its hint phase; DDP must tolerate that.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=setup.arm == "hldf")
    accelerator = Accelerator(
        mixed_precision=resolve_precision(setup.train.mixed_precision),
        kwargs_handlers=[ddp],
        cpu=not torch.accelerator.is_available(),
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != launched:
        raise InputError(
            f"the launcher started WORLD_SIZE={launched} processes, accelerate set up "
            f"{accelerator.num_processes}; check PROBEKD_LAUNCHER and the accelerate config"
        )
    if setup.train.batch_size < accelerator.num_processes:
        raise InputError(f"pretrain.train.batch_size={setup.train.batch_size} is below the process count")
    return accelerator


def prediction_mask(lengths: np.ndarray, seq_len: int) -> torch.Tensor:
    """(batch, seq_len) bool: position p counts when the token it predicts, p + 1, is not padding."""
    return torch.arange(seq_len)[None, :] + 1 < torch.from_numpy(lengths.astype(np.int64))[:, None]


@torch.no_grad()
def position_nll(
    model: Any, sequences: np.ndarray, batch_size: int, lengths: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """((seq_len - 1,) summed next-token NLL (natural log) at each predicted position, (seq_len - 1,) how many
    sequences it sums over: those whose token there is not padding (`lengths`: real tokens; None: no padding))."""
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    seq_len = sequences.shape[1]
    lengths = np.full(len(sequences), seq_len) if lengths is None else lengths
    sums, counts = torch.zeros(seq_len - 1, dtype=torch.float64), torch.zeros(seq_len - 1, dtype=torch.float64)
    for start in range(0, len(sequences), batch_size):
        ids = torch.from_numpy(sequences[start : start + batch_size].astype(np.int64)).to(device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()  # (batch, seq - 1, vocab)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").double().cpu()
        mask = prediction_mask(lengths[start : start + batch_size], seq_len)[:, :-1]
        sums += (nll * mask).sum(dim=0)
        counts += mask.sum(dim=0)
    model.train(was_training)
    return sums.numpy(), counts.numpy()


def log_perplexity(model: Any, sequences: np.ndarray, batch_size: int, lengths: np.ndarray | None = None) -> float:
    """Mean next-token NLL over every predicted token of `sequences` that is not padding, pooled over tokens."""
    sums, counts = position_nll(model, sequences, batch_size, lengths)
    return float(sums.sum() / counts.sum())


def step_loss(
    model: Any,
    projection: Any,
    ids: torch.Tensor,
    signal: dict[str, torch.Tensor] | None,
    weights: ArmWeights,
    temperature: float,
    layer: int | None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One process's loss on its share of the batch."""
    wants_hidden = bool(weights.hld)
    output = model(input_ids=ids, output_hidden_states=wants_hidden, use_cache=False)
    topk = (signal["topk_logprobs"], signal["topk_ids"]) if signal is not None and weights.kd else None
    pair = None
    if wants_hidden:
        assert signal is not None and layer is not None
        pair = (projection(output.hidden_states[layer]), signal["hidden"])
    return arm_loss(weights, output.logits, ids, temperature, topk, pair, mask)
