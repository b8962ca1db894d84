"""The student training loop behind `train`: inputs, accelerate loop, evaluation, atomic arm folder."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from stages.atomic import atomic_path
from stages.errors import InputError
from stages.launch import LAUNCHER_ENV
from stages.losses import LossWeights, total_loss
from stages.metrics import summary
from stages.prompts import MAX_CHOICES, PromptConfig, check_prompts_fit
from stages.schema import read_split
from stages.student_data import EncodedSplit, encode_split, letter_token_ids, step_rows
from stages.student_model import add_lora, forward_letters, save_student
from stages.train import SOFT_LABEL_FILES, ArmConfig, HLDConfig, KDConfig, TrainConfig, describe, resolve_layer
from stages.train_eval import evaluate, final_metrics, write_plots

log = logging.getLogger(__name__)


@dataclass
class TrainingRows:
    """labeled + transfer rows stacked (labeled first), with each row's targets."""

    encoded: EncodedSplit
    is_labeled: np.ndarray  # (n_rows,) bool
    soft_labels: np.ndarray | None  # (n_rows, MAX_CHOICES)
    teacher_hidden: np.ndarray | None  # (n_rows, d_teacher)
    n_labeled: int


def load_rows(root: Path, spec: ArmConfig, hld: HLDConfig | None, tokenizer: Any, prompt: PromptConfig) -> TrainingRows:
    """Read labeled and transfer, and the arm's targets; fail early and clearly on unavailable inputs."""
    from stages.labels_io import read_labels

    splits = {name: read_split(root / f"data/prepared/{name}.parquet") for name in ("labeled", "transfer")}
    if splits["labeled"].n_examples == 0:
        raise InputError(f"{root / 'data/prepared/labeled.parquet'}: no labeled examples to train on")
    parts = [encode_split(splits[name], tokenizer, prompt) for name in ("labeled", "transfer")]
    encoded = EncodedSplit(
        ids=parts[0].ids + parts[1].ids,
        token_ids=parts[0].token_ids + parts[1].token_ids,
        answers=np.concatenate([p.answers for p in parts]),
        valid=np.concatenate([p.valid for p in parts]),
    )
    n_labeled = parts[0].n_examples
    soft = None
    if spec.soft_labels:
        path = root / SOFT_LABEL_FILES[spec.soft_labels]
        soft = np.concatenate([read_labels(path, splits[name], name) for name in ("labeled", "transfer")])
    teacher_hidden = None
    if hld is not None:
        from stages.hidden_store import HiddenStore

        blocks = []
        for name in ("labeled", "transfer"):
            store = HiddenStore.open(root / f"data/hidden/{name}.zarr")
            if store.example_ids != splits[name].ids:
                raise InputError(f"{store.path}: example ids differ from data/prepared/{name}.parquet; rerun extract")
            layer = resolve_layer(hld.teacher_layer, store.n_teacher_layers, "distill.hld.teacher_layer")
            blocks.append(store.read_layer(store.slot_of(layer)))  # (n_examples, d_teacher)
        teacher_hidden = np.concatenate(blocks)
    is_labeled = np.arange(encoded.n_examples) < n_labeled
    return TrainingRows(encoded, is_labeled, soft, teacher_hidden, n_labeled)


def phase_weights(spec: ArmConfig, kd: KDConfig | None, hld: HLDConfig | None, step: int, steps: int) -> LossWeights:
    """The arm's loss weights at `step`; sequential HLD trains the hint alone for the first hint_fraction."""
    ce, kd_weight = (kd.alpha, 1.0 - kd.alpha) if kd else (1.0, 0.0)
    if hld is None:
        return LossWeights(ce=ce, kd=kd_weight)
    if hld.mode == "sequential":
        if step < round(hld.hint_fraction * steps):
            return LossWeights(ce=0.0, kd=0.0, hld=1.0)
        return LossWeights(ce=ce, kd=kd_weight)
    return LossWeights(ce=ce, kd=kd_weight, hld=hld.gamma)


def step_loss(
    model: Any,
    projection: Any,
    rows: TrainingRows,
    batch: list[int],
    weights: LossWeights,
    kd: KDConfig | None,
    letter_ids: torch.Tensor,
    pad_id: int,
    student_layer: int | None,
    scales: dict[str, float],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(this process's loss, its scaled terms) on its rows `batch` (indices into `rows`).

    Each term is multiplied by `scales` (see `term_scales`) so that DDP's mean of the processes' gradients is
    the gradient of the loss on the whole global batch.
    """
    letter_logits, hidden = forward_letters(
        model, [rows.encoded.token_ids[i] for i in batch], pad_id, letter_ids, student_layer
    )

    def take(array: np.ndarray | None) -> torch.Tensor | None:
        return None if array is None else torch.as_tensor(array[batch], device=letter_ids.device)

    _, terms = total_loss(
        weights,
        letter_logits,
        take(rows.encoded.valid),
        take(rows.encoded.answers),
        take(rows.is_labeled),
        soft_labels=take(rows.soft_labels),
        temperature=kd.temperature if kd else 1.0,
        projected_hidden=projection(hidden) if projection is not None and weights.hld else None,
        teacher_hidden=take(rows.teacher_hidden),
    )
    scaled = {name: value * scales[name] for name, value in terms.items()}
    return sum(getattr(weights, name) * value for name, value in scaled.items()), scaled


def term_scales(is_labeled: np.ndarray, batch: list[int], shard: list[int], world: int) -> dict[str, float]:
    """world x (this shard's share of the rows each term averages over): CE over labeled rows, KD and HLD over all.

    A term is a mean over its rows; scaled so, the mean over processes of the shards' terms is the global mean
    (1.0 each with one process).
    """
    labeled = world * int(is_labeled[shard].sum()) / int(is_labeled[batch].sum())
    every = world * len(shard) / len(batch)
    return {"ce": labeled, "kd": every, "hld": every}


@dataclass
class Run:
    """Everything the loop needs, placed by accelerate."""

    accelerator: Any
    model: Any
    projection: Any  # torch.nn.Linear d_student -> d_teacher, HLD arms only
    optimizer: Any
    scheduler: Any
    parameters: list[torch.nn.Parameter]
    tokenizer: Any
    rows: TrainingRows
    evaluation: dict[str, EncodedSplit]
    letter_ids: torch.Tensor  # (MAX_CHOICES,) student token id of each option letter
    student_layer: int | None


def prepare_run(spec: ArmConfig, hld: HLDConfig | None, config: TrainConfig, params: dict[str, Any], root: Path) -> Run:
    """Load the student and every input (a missing or unusable input fails here, before any training)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed
    from transformers import get_linear_schedule_with_warmup

    from stages.hf_models import load_model

    set_seed(int(params["seed"]))
    torch.use_deterministic_algorithms(True, warn_only=True)
    prompt = PromptConfig.from_params(params["prompt"])
    model, tokenizer, ref = load_model(root / "data/models/student", dtype=torch.float32)  # fp32 master weights
    if ref.kind != "causal_lm":
        raise InputError(f"the student {ref.source} has no LM head; the student must be a causal LM")
    rows = load_rows(root, spec, hld, tokenizer, prompt)
    evaluation = {
        name: encode_split(read_split(root / f"data/prepared/{name}.parquet"), tokenizer, prompt)
        for name in ("val", "test")
    }
    for part in (rows.encoded, *evaluation.values()):
        check_prompts_fit([len(tokens) for tokens in part.token_ids], part.ids, model.config, "student")
    letters = letter_token_ids(tokenizer, MAX_CHOICES)
    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    # A sequential HLD arm leaves the projection unused after the hint phase; DDP must tolerate that.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=hld is not None and hld.mode == "sequential")
    # Without cpu=True, accelerate ignores torchrun's WORLD_SIZE on a machine with no accelerator: every process
    # then trains alone as its own "main process" and they all write the arm folder at once.
    # split_batches: train.batch_size is the global batch, so the prepared scheduler steps once per optimiser step
    # (otherwise accelerate steps it once per process and the LR decays num_processes times too fast).
    accelerator = Accelerator(
        mixed_precision=precision,
        kwargs_handlers=[ddp],
        cpu=not torch.accelerator.is_available(),
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != launched:
        raise InputError(
            f"the launcher started WORLD_SIZE={launched} processes but accelerate set up {accelerator.num_processes} "
            f"({accelerator.distributed_type}); check {LAUNCHER_ENV} and the accelerate config"
        )
    if config.labeled_per_step < accelerator.num_processes:  # every process needs labeled rows for its CE term
        raise InputError(
            f"train.batch_size={config.batch_size} gives {config.labeled_per_step} labeled rows per step, fewer than "
            f"the {accelerator.num_processes} processes; raise train.batch_size or lower train.transfer_fraction"
        )
    if config.lora:
        model = add_lora(model, config)
    modules: list[Any] = [model]
    student_layer = None
    if hld is not None:
        student_layer = resolve_layer(
            hld.student_layer, model.config.num_hidden_layers + 1, "distill.hld.student_layer"
        )
        modules.append(torch.nn.Linear(model.config.hidden_size, rows.teacher_hidden.shape[1], bias=False))
    parameters = [p for module in modules for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup_fraction * config.steps), config.steps)
    *modules, optimizer, scheduler = accelerator.prepare(*modules, optimizer, scheduler)
    letter_ids = torch.tensor(letters, device=accelerator.device)
    projection = modules[1] if hld is not None else None
    return Run(
        accelerator, modules[0], projection, optimizer, scheduler, parameters, tokenizer, rows, evaluation, letter_ids,
        student_layer,
    )  # fmt: skip


def train_steps(
    run: Run, spec: ArmConfig, kd: KDConfig | None, hld: HLDConfig | None, config: TrainConfig, seed: int, live: Any
) -> None:
    """The optimiser loop; `live` (main process only, else None) gets every loss term and the val metrics.

    Every process draws the same global batches (same seed) and trains on its share; the logged terms are the
    global batch's, averaged over processes. Only the main process evaluates, on the unwrapped model, so that
    no DDP collective runs on one process alone.
    """
    rows, accelerator, pad_id = run.rows, run.accelerator, run.tokenizer.pad_token_id
    n_transfer = rows.encoded.n_examples - rows.n_labeled
    stream = step_rows(rows.n_labeled, n_transfer, config.labeled_per_step, config.transfer_per_step, seed)
    uses_transfer = spec.soft_labels is not None or hld is not None  # the gold arm skips the transfer rows
    rank, world = accelerator.process_index, accelerator.num_processes
    progress = tqdm(range(config.steps), desc="train", mininterval=1.0, disable=live is None)
    for step in progress:
        drawn = next(stream)
        batch = drawn.labeled + ([rows.n_labeled + i for i in drawn.transfer] if uses_transfer else [])
        shard = batch[rank::world]  # each process takes its share of the global batch
        weights = phase_weights(spec, kd, hld, step, config.steps)
        run.model.train()
        with accelerator.autocast():
            loss, terms = step_loss(
                run.model, run.projection, rows, shard, weights, kd, run.letter_ids, pad_id, run.student_layer,
                term_scales(rows.is_labeled, batch, shard, world),
            )  # fmt: skip
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(run.parameters, config.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad()
        names = sorted(terms)
        merged = accelerator.reduce(torch.stack([terms[n].detach().float() for n in names]), reduction="sum") / world
        if live is None:
            continue
        global_terms = dict(zip(names, merged.tolist(), strict=True))
        global_loss = sum(getattr(weights, name) * value for name, value in global_terms.items())
        progress.set_postfix(loss=f"{global_loss:.4f}", refresh=False)  # drawn at mininterval
        live.log_metric("train/loss", global_loss)
        for name, value in global_terms.items():
            live.log_metric(f"train/{name}", value)
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            student = accelerator.unwrap_model(run.model)
            val_probs = evaluate(student, run.evaluation["val"], pad_id, run.letter_ids, config.batch_size)
            for name, value in summary(val_probs, run.evaluation["val"].answers).items():
                live.log_metric(f"val/{name}", value)
        live.next_step()


def run_arm(
    arm: str,
    spec: ArmConfig,
    kd: KDConfig | None,
    hld: HLDConfig | None,
    config: TrainConfig,
    params: dict[str, Any],
    root: Path,
) -> dict[str, float]:
    """Train the arm and write data/students/<arm>/ atomically (main process only); returns its final metrics.

    Under a launcher every process returns the main process's metrics, once the arm folder is in place.
    """
    from accelerate.utils import broadcast_object_list
    from dvclive import Live

    run = prepare_run(spec, hld, config, params, root)
    pad_id, seed = run.tokenizer.pad_token_id, int(params["seed"])
    metrics = None
    if not run.accelerator.is_main_process:
        train_steps(run, spec, kd, hld, config, seed, live=None)
        return broadcast_object_list([metrics])[0]  # waits for the main process to finish writing
    # DVCLive writes into its folder while training: it lives inside the temporary arm folder, renamed at the end.
    with atomic_path(root / f"data/students/{arm}", directory=True) as out:
        live = Live(dir=str(out / "live"), save_dvc_exp=False, dvcyaml=False)
        live.step = 1  # the curves' step = optimiser steps completed
        train_steps(run, spec, kd, hld, config, seed, live)
        live.end()
        student = run.accelerator.unwrap_model(run.model)
        metrics = final_metrics(student, run.evaluation, pad_id, run.letter_ids, config.batch_size)
        save_student(
            run.accelerator, run.model, run.projection, run.tokenizer, out, describe(arm, spec, kd, hld, config)
        )
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        write_plots(out, student, run.evaluation["test"], pad_id, run.letter_ids, config.batch_size)
    return broadcast_object_list([metrics])[0]
