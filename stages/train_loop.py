"""The student training loop behind `train`: inputs, accelerate loop, evaluation, atomic arm folder."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from stages.atomic import atomic_path
from stages.errors import InputError
from stages.losses import LossWeights, total_loss
from stages.prompts import MAX_CHOICES, PromptConfig
from stages.schema import read_split
from stages.student_data import EncodedSplit, encode_split, letter_token_ids, pad_batch, step_rows
from stages.train import SOFT_LABEL_FILES, ArmConfig, HLDConfig, KDConfig, TrainConfig, describe, resolve_layer
from stages.train_eval import evaluate, final_metrics, write_plots

log = logging.getLogger(__name__)
PROJECTION_FILE = "hld_projection.safetensors"


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


def forward_letters(
    model: Any, batch_ids: list[list[int]], pad_id: int, letter_ids: torch.Tensor, hidden_layer: int | None
):
    """(letter logits (batch, MAX_CHOICES), hidden state at the answer position (batch, d_student) or None)."""
    device = letter_ids.device
    input_ids, attention_mask, last = (t.to(device) for t in pad_batch(batch_ids, pad_id))
    output = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=hidden_layer is not None)
    rows = torch.arange(input_ids.shape[0], device=device)
    letter_logits = output.logits[rows, last][:, letter_ids]  # (batch, MAX_CHOICES)
    hidden = output.hidden_states[hidden_layer][rows, last] if hidden_layer is not None else None
    return letter_logits, hidden


def run_arm(
    arm: str,
    spec: ArmConfig,
    kd: KDConfig | None,
    hld: HLDConfig | None,
    config: TrainConfig,
    params: dict[str, Any],
    root: Path,
) -> dict[str, float]:
    """Train the arm and write data/students/<arm>/ atomically; returns its final metrics."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from dvclive import Live
    from transformers import get_linear_schedule_with_warmup

    from stages.hf_models import load_model

    seed = int(params["seed"])
    set_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    prompt = PromptConfig.from_params(params["prompt"])
    model, tokenizer, ref = load_model(root / "data/models/student", dtype=torch.float32)
    if ref.kind != "causal_lm":
        raise InputError(f"the student {ref.source} has no LM head; the student must be a causal LM")
    rows = load_rows(root, spec, hld, tokenizer, prompt)  # before training: a missing input fails here
    evaluation = {
        name: encode_split(read_split(root / f"data/prepared/{name}.parquet"), tokenizer, prompt)
        for name in ("val", "test")
    }
    letters = letter_token_ids(tokenizer, MAX_CHOICES)
    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    # A sequential HLD arm leaves the projection unused after the hint phase; DDP must tolerate that.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=hld is not None and hld.mode == "sequential")
    accelerator = Accelerator(mixed_precision=precision, kwargs_handlers=[ddp])
    if config.lora:
        model = add_lora(model, config)
    student_layer, projection = None, None
    modules: list[Any] = [model]
    if hld is not None:
        n_student_layers = model.config.num_hidden_layers + 1
        student_layer = resolve_layer(hld.student_layer, n_student_layers, "distill.hld.student_layer")
        projection = torch.nn.Linear(model.config.hidden_size, rows.teacher_hidden.shape[1], bias=False)
        modules.append(projection)
    parameters = [p for module in modules for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup_fraction * config.steps), config.steps)
    *modules, optimizer, scheduler = accelerator.prepare(*modules, optimizer, scheduler)
    model = modules[0]
    projection = modules[1] if hld is not None else None
    letter_ids = torch.tensor(letters, device=accelerator.device)
    pad_id = tokenizer.pad_token_id
    uses_transfer = spec.soft_labels is not None or hld is not None
    stream = step_rows(
        rows.n_labeled,
        rows.encoded.n_examples - rows.n_labeled,
        config.labeled_per_step,
        config.transfer_per_step,
        seed,
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    if config.labeled_per_step < world:  # every process needs labeled rows for its CE term
        raise InputError(
            f"train.batch_size={config.batch_size} gives {config.labeled_per_step} labeled rows per step, fewer than "
            f"the {world} processes; raise train.batch_size or lower train.transfer_fraction"
        )

    with atomic_path(root / f"data/students/{arm}", directory=True) as out:
        live = Live(dir=str(out / "live"), save_dvc_exp=False, dvcyaml=False) if accelerator.is_main_process else None
        progress = tqdm(range(config.steps), desc=f"train {arm}", disable=not accelerator.is_main_process)
        for step in progress:
            drawn = next(stream)
            batch = drawn.labeled + ([rows.n_labeled + i for i in drawn.transfer] if uses_transfer else [])
            batch = batch[rank::world]  # each process takes its share of the global batch
            weights = phase_weights(spec, kd, hld, step, config.steps)
            model.train()
            with accelerator.autocast():
                letter_logits, hidden = forward_letters(
                    model, [rows.encoded.token_ids[i] for i in batch], pad_id, letter_ids, student_layer
                )

                def target(array: np.ndarray | None, rows: list[int] = batch) -> torch.Tensor | None:
                    return None if array is None else torch.as_tensor(array[rows], device=accelerator.device)

                loss, terms = total_loss(
                    weights,
                    letter_logits,
                    target(rows.encoded.valid),
                    target(rows.encoded.answers),
                    target(rows.is_labeled),
                    soft_labels=target(rows.soft_labels),
                    temperature=kd.temperature if kd else 1.0,
                    projected_hidden=projection(hidden) if projection is not None and weights.hld else None,
                    teacher_hidden=target(rows.teacher_hidden),
                )
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            progress.set_postfix(loss=f"{loss.item():.4f}")
            if live is not None:
                live.log_metric("train/loss", loss.item())
                for name, value in terms.items():
                    live.log_metric(f"train/{name}", value.item())
            if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
                val_probs = evaluate(model, evaluation["val"], pad_id, letter_ids, config.batch_size)
                if live is not None:
                    live.log_metric("val/acc", float(np.mean(val_probs.argmax(-1) == evaluation["val"].answers)))
            if live is not None:
                live.next_step()
        metrics = final_metrics(model, evaluation, pad_id, letter_ids, config.batch_size)
        if accelerator.is_main_process:
            live.end()
            save_student(accelerator, model, projection, tokenizer, out, describe(arm, spec, kd, hld, config))
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
            write_plots(out, model, evaluation["test"], pad_id, letter_ids, config.batch_size)
        accelerator.wait_for_everyone()
    return metrics


def add_lora(model: Any, config: TrainConfig) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:
        raise InputError("train.lora=true needs peft: `pip install peft`, or set train.lora: false") from error
    lora = LoraConfig(
        r=config.lora_rank, lora_alpha=2 * config.lora_rank, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    return get_peft_model(model, lora)


def save_student(accelerator: Any, model: Any, projection: Any, tokenizer: Any, out: Path, description: dict) -> None:
    """save_pretrained the student (LoRA merged in); the HLD projection goes to its own file, unused at inference."""
    from safetensors.torch import save_file

    student = accelerator.unwrap_model(model)
    if hasattr(student, "merge_and_unload"):
        student = student.merge_and_unload()
    student.save_pretrained(out / "model", safe_serialization=True)
    tokenizer.save_pretrained(out / "model")
    (out / "model" / "training.json").write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    if projection is not None:
        weight = accelerator.unwrap_model(projection).weight.detach().float().cpu().contiguous()
        save_file(
            {"weight": weight}, str(out / "model" / PROJECTION_FILE), metadata={"shape": "(d_teacher, d_student)"}
        )
