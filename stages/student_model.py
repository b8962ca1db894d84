"""The student as the trainer uses it: letter logits at the answer position, LoRA, saving with its HLD projection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from stages.errors import InputError
from stages.student_data import pad_batch

PROJECTION_FILE = "hld_projection.safetensors"  # beside the saved student; not needed at inference


def forward_letters(
    model: Any, batch_ids: list[list[int]], pad_id: int, letter_ids: torch.Tensor, hidden_layer: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(letter logits (batch, MAX_CHOICES), hidden state at the answer position (batch, d_student) or None)."""
    device = letter_ids.device
    input_ids, attention_mask, last = (t.to(device) for t in pad_batch(batch_ids, pad_id))
    output = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=hidden_layer is not None)
    rows = torch.arange(input_ids.shape[0], device=device)
    letter_logits = output.logits[rows, last][:, letter_ids]  # (batch, MAX_CHOICES)
    hidden = output.hidden_states[hidden_layer][rows, last] if hidden_layer is not None else None
    return letter_logits, hidden


def add_lora(model: Any, config: Any) -> Any:
    """Wrap the student in LoRA adapters on every linear layer (`train.lora_rank`); peft is imported only here."""
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
