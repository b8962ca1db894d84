"""Everything a training run needs before its first step: the student, its inputs, accelerate, the optimiser.

A missing or unusable input fails here, before any training. The order of the steps is part of the result:
the seed is set first, and LoRA adapters and the HLD projection draw their initial weights in that order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from stages.core.errors import InputError, Unavailable
from stages.core.launch import LAUNCHER_ENV, resolve_precision
from stages.core.layers import resolve_layer
from stages.sources.prompts import check_prompts_fit
from stages.student.config import HLDConfig, TrainConfig, TrainPaths, TrainSetup
from stages.student.data import EncodedSplit
from stages.student.model import LetterReadout, StudentModules, add_lora
from stages.student.rows import TrainingRows, load_evaluation, load_rows


@dataclass(frozen=True)
class LossContext:
    """What every step's loss reads that stays fixed for the run."""

    rows: TrainingRows
    readout: LetterReadout
    student_layer: int | None  # HLD arms: the student hidden-state layer the projection reads
    temperature: float  # KD temperature (1.0 for arms without KD, which have no KD term)


@dataclass
class Run:
    """Everything the loop needs, placed by accelerate."""

    accelerator: Any
    modules: StudentModules
    optimizer: Any
    scheduler: Any
    parameters: list[torch.nn.Parameter]
    context: LossContext
    evaluation: dict[str, EncodedSplit]


def prepare_run(setup: TrainSetup, paths: TrainPaths) -> Run:
    """Load the student and every input, set up accelerate and the optimiser."""
    from accelerate.utils import set_seed

    set_seed(setup.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    model, tokenizer = load_student(paths)
    rows = load_rows(setup, paths, tokenizer)
    evaluation = load_evaluation(paths.prepared, tokenizer, setup.prompt)
    for part in (rows.encoded, *evaluation.values()):
        check_prompts_fit([len(tokens) for tokens in part.token_ids], part.ids, model.config, "student")
        if part.cloze is not None:
            check_prompts_fit(part.cloze.lengths, [part.ids[i] for i in part.cloze.example], model.config, "student")
    readout = LetterReadout.of(tokenizer, chat=setup.prompt.chat_template)
    student_layer = hint_layer(model, setup.hld)
    accelerator = make_accelerator(setup.train, setup.hld)
    modules = build_modules(model, setup, rows)
    parameters = [p for module in modules.all for p in module.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimiser(parameters, setup.train)
    *placed, optimizer, scheduler = accelerator.prepare(*modules.all, optimizer, scheduler)
    modules = StudentModules(placed[0], placed[1] if modules.projection is not None else None)
    temperature = setup.kd.temperature if setup.kd else 1.0
    context = LossContext(rows, readout.to(accelerator.device), student_layer, temperature)
    return Run(accelerator, modules, optimizer, scheduler, parameters, context, evaluation)


def load_student(paths: TrainPaths) -> tuple[Any, Any]:
    """(model, tokenizer) of the student, in fp32 master weights; it must be a causal LM."""
    from stages.modeling.loading import load_model

    model, tokenizer, ref = load_model(paths.student, dtype=torch.float32)
    if ref.kind != "causal_lm":
        raise InputError(f"the student {ref.source} has no LM head; the student must be a causal LM")
    return model, tokenizer


def mixed_precision(config: TrainConfig) -> str:
    """`train.mixed_precision`, with auto resolved."""
    return resolve_precision(config.mixed_precision)


def make_accelerator(config: TrainConfig, hld: HLDConfig | None) -> Any:
    """The Accelerator, checked against the launcher and the batch size."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

    # A sequential HLD arm leaves the projection unused after the hint phase; DDP must tolerate that.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=hld is not None and hld.mode == "sequential")
    # Without cpu=True, accelerate ignores torchrun's WORLD_SIZE on a machine with no accelerator: every process
    # then trains alone as its own "main process" and they all write the arm folder at once.
    # split_batches: train.batch_size is the global batch, so the prepared scheduler steps once per optimiser step
    # (otherwise accelerate steps it once per process and the LR decays num_processes times too fast).
    accelerator = Accelerator(
        mixed_precision=mixed_precision(config),
        kwargs_handlers=[ddp],
        cpu=not torch.accelerator.is_available(),
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    check_processes(accelerator, config)
    return accelerator


def check_processes(accelerator: Any, config: TrainConfig) -> None:
    """accelerate runs as many processes as the launcher started, and each gets labeled rows."""
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


def build_modules(model: Any, setup: TrainSetup, rows: TrainingRows) -> StudentModules:
    """The student (with LoRA adapters if asked) and, for HLD arms, a fresh projection d_student -> d_teacher."""
    if setup.train.lora:
        model = add_lora(model, setup.train)
    projection = None
    if setup.hld is not None:
        assert rows.teacher_hidden is not None  # read_training_rows reads it whenever setup.hld is set
        projection = torch.nn.Linear(model.config.hidden_size, rows.teacher_hidden.shape[1], bias=False)
    return StudentModules(model, projection)


def make_optimiser(parameters: list[torch.nn.Parameter], config: TrainConfig) -> tuple[Any, Any]:
    """AdamW with linear warm-up over `train.warmup_fraction` of the steps, then linear decay to 0."""
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup_fraction * config.steps), config.steps)
    return optimizer, scheduler


def hint_layer(model: Any, hld: HLDConfig | None) -> int | None:
    """The student hidden-state layer the HLD projection reads (None without HLD)."""
    if hld is None:
        return None
    if getattr(model.config, "num_hidden_layers", None) is None:
        raise Unavailable(f"distill.hld needs the student's hidden states, but {type(model).__name__} exposes none")
    n_layers = model.config.num_hidden_layers + 1  # the embedding output counts
    return resolve_layer(hld.student_layer, n_layers, "distill.hld.student_layer", whose="the student")
