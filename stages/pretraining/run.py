"""`pretrain@<arm>`: train one arm and write its folder, renamed into place when complete (main process only):
`model/` (save_pretrained with the teacher's tokenizer, `training.json` beside it), `training.json` (steps, tokens,
FLOPs with the teacher's share, final val log-perplexity) and `live/` (DVCLive: every loss term and the cumulative
FLOPs per step, and `plots/custom/val_logppl.json`, the validation log-perplexity against tokens and FLOPs).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from stages.core.atomic import atomic_path
from stages.core.errors import InputError
from stages.pretraining.config import ArmSetup
from stages.pretraining.corpus import read_corpus, read_lengths
from stages.pretraining.losses import arm_weights, step_flops
from stages.pretraining.signal import load_signal_teacher
from stages.pretraining.signal_store import SignalStore
from stages.pretraining.trainer import (
    Signal,
    arm_steps,
    batch_order,
    build_student,
    hint_layer,
    log_perplexity,
    make_accelerator,
    prediction_mask,
    step_loss,
)

log = logging.getLogger(__name__)
EVAL_BATCH = 64


def open_signal(setup: ArmSetup, signal_path: Path, teacher_dir: Path, n_train: int) -> Signal:
    """The cached signal, or the teacher itself when the store says `online`; nll reads only its metadata."""
    store = SignalStore(signal_path)
    attrs = store.attrs
    if store.online:
        config = attrs["config"]
        teacher = load_signal_teacher(teacher_dir, config["layer"], config["top_k"], config["device"])
        return Signal(None, teacher, teacher.n_params, teacher.model.config.hidden_size)
    if attrs["n_sequences"] != n_train:
        raise InputError(
            f"{signal_path} holds {attrs['n_sequences']} sequences, the corpus {n_train}: rerun teacher_signal"
        )
    arrays = store.load() if setup.uses_teacher else None
    return Signal(arrays, None, int(attrs["teacher_params"]), int(attrs["d_teacher"]))


@dataclass
class ArmRun:
    """Everything the loop needs, placed by accelerate."""

    setup: ArmSetup
    accelerator: Any
    model: Any
    projection: Any
    optimizer: Any
    scheduler: Any
    train: np.ndarray  # (n_train, seq_len) token ids
    val: np.ndarray  # (n_val, seq_len)
    lengths: tuple[np.ndarray, np.ndarray]  # (n_train,), (n_val,) real tokens per sequence (the rest is padding)
    signal: Signal
    tokenizer: Any
    context: dict[str, Any]  # steps, parameter counts, tokens per step: recorded in training.json


def prepare_arm(setup: ArmSetup, corpus: Path, signal_path: Path, teacher_dir: Path) -> ArmRun:
    """The seeded student (and projection), its inputs, accelerate, AdamW with warm-up and cosine decay."""
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    from stages.modeling.loading import ModelRef, load_tokenizer

    set_seed(setup.seed)
    train, val, description = read_corpus(corpus)
    lengths = read_lengths(corpus)
    tokenizer = load_tokenizer(ModelRef.read(teacher_dir), teacher_dir)
    signal = open_signal(setup, signal_path, teacher_dir, len(train))
    model, projection = build_student(setup, tokenizer, signal.d_teacher)
    accelerator = make_accelerator(setup)
    student_params = sum(p.numel() for p in model.parameters())
    extra = 0 if projection is None else sum(p.numel() for p in projection.parameters())
    tokens_per_step = setup.train.batch_size * train.shape[1]
    steps = arm_steps(setup, student_params, extra, signal.teacher_params, tokens_per_step)
    modules = [model] if projection is None else [model, projection]
    parameters = [p for module in modules for p in module.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=setup.train.lr, weight_decay=setup.train.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(setup.train.warmup_fraction * steps), steps)
    *placed, optimizer, scheduler = accelerator.prepare(*modules, optimizer, scheduler)
    context = {
        "steps": steps,
        "student_params": student_params,
        "projection_params": extra,
        "teacher_params": signal.teacher_params if setup.uses_teacher else 0,
        "tokens_per_step": tokens_per_step,
        "online": signal.teacher is not None,
        "corpus": description["config"],
    }
    projection = placed[1] if projection is not None else None
    return ArmRun(
        setup, accelerator, placed[0], projection, optimizer, scheduler, train, val, lengths, signal, tokenizer, context
    )


def run_arm(setup: ArmSetup, corpus: Path, signal_path: Path, teacher_dir: Path, out: Path) -> dict[str, Any]:
    """Train the arm on the corpus and write `out` (main process); returns its training summary."""
    from accelerate.utils import broadcast_object_list

    run = prepare_arm(setup, corpus, signal_path, teacher_dir)
    summary = None
    if run.accelerator.is_main_process:
        with atomic_path(out, directory=True) as folder:
            summary = train_and_write(run, folder)
    else:
        loop(run, None)
    return broadcast_object_list([summary])[0]


def train_and_write(run: ArmRun, folder: Path) -> dict[str, Any]:
    from dvclive import Live

    setup = run.setup
    # No timestamps in the curves (log_metric adds them only when asked): the same run gives the same bytes.
    live = Live(dir=str(folder / "live"), save_dvc_exp=False, dvcyaml=False)
    curve = loop(run, live)
    live.log_plot(
        "val_logppl",
        curve,
        x="tokens",
        y="val_logppl",
        template="linear",
        title=f"{setup.arm}: validation log-perplexity",
        x_label="tokens",
        y_label="log-perplexity",
    )
    live.end()
    student = run.accelerator.unwrap_model(run.model)
    student.save_pretrained(folder / "model", safe_serialization=True)
    run.tokenizer.save_pretrained(folder / "model")
    described = {
        "arm": setup.arm,
        "seed": setup.seed,
        "student": asdict(setup.student),
        "train": asdict(setup.train),
        "kd": asdict(setup.kd) if setup.kd else None,
        "hld": asdict(setup.hld) if setup.hld else None,
    }
    (folder / "model" / "training.json").write_text(json.dumps(described, indent=2, sort_keys=True) + "\n")
    last = curve[-1]
    summary = {
        **run.context,
        "train_tokens": last["tokens"],
        "train_flops": last["flops"],
        "val_logppl": last["val_logppl"],
    }
    (folder / "training.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    log.info(
        "%s: %d steps, %.3g FLOPs, val log-ppl %.4f", setup.arm, summary["steps"], last["flops"], last["val_logppl"]
    )
    return summary


def loop(run: ArmRun, live: Any, steps: int | None = None) -> list[dict[str, float]]:
    """The optimiser steps (all, or the first `steps`); `live` (main process only, else None) gets every term,
    the FLOPs, and the val curve it returns."""
    setup, context, accelerator = run.setup, run.context, run.accelerator
    config, total = setup.train, context["steps"]
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    layer = hint_layer(setup)  # None without HLD
    temperature = setup.kd.temperature if setup.kd else 1.0
    per_step = step_flops(
        context["student_params"] + context["projection_params"],
        context["teacher_params"],
        context["tokens_per_step"],
        setup.uses_teacher,
    )
    order = batch_order(len(run.train), config.batch_size, setup.seed)
    parameters = [p for module in (run.model, run.projection) if module is not None for p in module.parameters()]
    curve: list[dict[str, float]] = []
    run.model.train()
    for step in tqdm(
        range(total if steps is None else steps), desc=f"pretrain {setup.arm}", mininterval=2.0, disable=live is None
    ):
        rows = next(order)[rank::world]
        ids = torch.from_numpy(run.train[rows].astype(np.int64)).to(device)
        weights = arm_weights(setup.arm, setup.kd, setup.hld, step, total)
        batch_signal = run.signal.batch(rows, ids, device) if setup.uses_teacher else None
        with accelerator.autocast():
            mask = prediction_mask(run.lengths[0][rows], ids.shape[1]).to(device)
            loss, terms = step_loss(run.model, run.projection, ids, batch_signal, weights, temperature, layer, mask)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad()
        if live is None:
            continue
        live.step = step + 1
        live.log_metric("train/loss", float(loss.detach()))
        for name, value in terms.items():
            live.log_metric(f"train/{name}", float(value.detach()))
        live.log_metric("train/flops", per_step * (step + 1))
        if (step + 1) % config.eval_every == 0 or step + 1 == total:
            logppl = log_perplexity(accelerator.unwrap_model(run.model), run.val, EVAL_BATCH, run.lengths[1])
            live.log_metric("val/logppl", logppl)
            curve.append(
                {
                    "step": step + 1,
                    "tokens": context["tokens_per_step"] * (step + 1),
                    "flops": per_step * (step + 1),
                    "val_logppl": logppl,
                }
            )
        live.next_step()
    return curve
