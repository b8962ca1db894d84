"""The optimiser loop: each step's loss weights, its loss on this process's share of the batch, the logging."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from stages.core.metrics import summary
from stages.student.config import TrainSetup
from stages.student.data import step_rows
from stages.student.evaluation import evaluate
from stages.student.losses import LossWeights, total_loss
from stages.student.model import StudentModules, forward_letters
from stages.student.setup import LossContext, Run


def phase_weights(setup: TrainSetup, step: int) -> LossWeights:
    """The arm's loss weights at `step`; sequential HLD trains the hint alone for the first hint_fraction."""
    kd, hld = setup.kd, setup.hld
    ce, kd_weight = (kd.alpha, 1.0 - kd.alpha) if kd else (1.0, 0.0)
    if hld is None:
        return LossWeights(ce=ce, kd=kd_weight)
    if hld.mode == "sequential":
        if step < round(hld.hint_fraction * setup.train.steps):
            return LossWeights(ce=0.0, kd=0.0, hld=1.0)
        return LossWeights(ce=ce, kd=kd_weight)
    return LossWeights(ce=ce, kd=kd_weight, hld=hld.gamma)


def step_loss(
    modules: StudentModules, context: LossContext, batch: list[int], weights: LossWeights, scales: dict[str, float]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(this process's loss, its scaled terms) on its rows `batch` (indices into `context.rows`).

    Each term is multiplied by `scales` (see `term_scales`) so that DDP's mean of the processes' gradients is
    the gradient of the loss on the whole global batch.
    """
    rows, readout = context.rows, context.readout
    token_ids = [rows.encoded.token_ids[i] for i in batch]
    letter_logits, hidden = forward_letters(modules.model, token_ids, readout, context.student_layer)

    def take(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array[batch], device=readout.letter_ids.device)

    def take_optional(array: np.ndarray | None) -> torch.Tensor | None:
        return None if array is None else take(array)

    projection = modules.projection
    _, terms = total_loss(
        weights,
        letter_logits,
        take(rows.encoded.valid),
        take(rows.encoded.answers),
        take(rows.gold_rows),
        soft_labels=take_optional(rows.soft_labels),
        temperature=context.temperature,
        projected_hidden=projection(hidden) if projection is not None and weights.hld else None,
        teacher_hidden=take_optional(rows.teacher_hidden),
    )
    scaled = {name: value * scales[name] for name, value in terms.items()}
    return sum(getattr(weights, name) * value for name, value in scaled.items()), scaled


def term_scales(gold_rows: np.ndarray, batch: list[int], shard: list[int], world: int) -> dict[str, float]:
    """world x (this shard's share of the rows each term averages over): CE over gold rows, KD and HLD over all.

    A term is a mean over its rows; scaled so, the mean over processes of the shards' terms is the global mean
    (1.0 each with one process).
    """
    labeled = world * int(gold_rows[shard].sum()) / int(gold_rows[batch].sum())
    every = world * len(shard) / len(batch)
    return {"ce": labeled, "kd": every, "hld": every}


def train_steps(run: Run, setup: TrainSetup, live: Any) -> None:
    """The optimiser loop; `live` (main process only, else None) gets every loss term and the val metrics.

    Every process draws the same global batches (same seed) and trains on its share; the logged terms are the
    global batch's, averaged over processes. Only the main process evaluates, on the unwrapped model, so that
    no DDP collective runs on one process alone.
    """
    rows, accelerator, config = run.context.rows, run.accelerator, setup.train
    n_transfer = rows.encoded.n_examples - rows.n_labeled
    stream = step_rows(rows.n_labeled, n_transfer, config.labeled_per_step, config.transfer_per_step, setup.seed)
    arm = setup.terms
    uses_transfer = arm.soft_labels is not None or arm.hld or arm.gold_transfer  # the gold arm skips them
    rank, world = accelerator.process_index, accelerator.num_processes
    progress = tqdm(range(config.steps), desc="train", mininterval=1.0, disable=live is None)
    for step in progress:
        drawn = next(stream)
        batch = drawn.labeled + ([rows.n_labeled + i for i in drawn.transfer] if uses_transfer else [])
        shard = batch[rank::world]  # each process takes its share of the global batch
        weights = phase_weights(setup, step)
        run.modules.model.train()
        with accelerator.autocast():
            scales = term_scales(rows.gold_rows, batch, shard, world)
            loss, terms = step_loss(run.modules, run.context, shard, weights, scales)
        optimiser_step(run, loss, config.max_grad_norm)
        global_terms = mean_over_processes(accelerator, terms)  # a collective: every process takes part
        if live is None:
            continue
        log_terms(live, progress, weights, global_terms)
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            log_validation(live, run, config.batch_size)
        live.next_step()


def optimiser_step(run: Run, loss: torch.Tensor, max_grad_norm: float) -> None:
    run.accelerator.backward(loss)
    run.accelerator.clip_grad_norm_(run.parameters, max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad()


def mean_over_processes(accelerator: Any, terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """The global batch's terms: the mean over processes of their scaled shard terms."""
    names = sorted(terms)
    merged = accelerator.reduce(torch.stack([terms[n].detach().float() for n in names]), reduction="sum")
    return dict(zip(names, (merged / accelerator.num_processes).tolist(), strict=True))


def log_terms(live: Any, progress: Any, weights: LossWeights, terms: dict[str, float]) -> None:
    loss = sum(getattr(weights, name) * value for name, value in terms.items())
    progress.set_postfix(loss=f"{loss:.4f}", refresh=False)  # drawn at mininterval
    live.log_metric("train/loss", loss)
    for name, value in terms.items():
        live.log_metric(f"train/{name}", value)


def log_validation(live: Any, run: Run, batch_size: int) -> None:
    """Val metrics of the unwrapped student (main process only: no DDP collective)."""
    student = run.accelerator.unwrap_model(run.modules.model)
    val = run.evaluation["val"]
    for name, value in summary(evaluate(student, val, run.context.readout, batch_size), val.answers).items():
        live.log_metric(f"val/{name}", value)
