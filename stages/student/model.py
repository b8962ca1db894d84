"""The student as the trainer uses it: letter logits at the answer position, LoRA, saving with its HLD projection."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stages.core.errors import InputError
from stages.modeling.chat import assistant_start
from stages.modeling.letters import letter_token_ids
from stages.sources.prompts import MAX_CHOICES
from stages.student.data import pad_batch

PROJECTION_FILE = "hld_projection.safetensors"  # beside the saved student; not needed at inference


@dataclass(frozen=True)
class LetterReadout:
    """How a student's answer is read: its tokenizer pads the prompts, its option-letter tokens are scored."""

    tokenizer: Any
    letter_ids: torch.Tensor  # (MAX_CHOICES,) student token id of each option letter, on the model's device

    @classmethod
    def of(cls, tokenizer: Any, device: torch.device | str = "cpu", chat: bool = False) -> LetterReadout:
        """With `chat`, the letters read after the student's own chat template's assistant turn."""
        letters, _ = letter_token_ids(tokenizer, MAX_CHOICES, "student", assistant_start(tokenizer, "student") if chat
                                      else None)  # fmt: skip
        return cls(tokenizer, torch.tensor(letters, device=device))

    def to(self, device: torch.device | str) -> LetterReadout:
        return LetterReadout(self.tokenizer, self.letter_ids.to(device))


@dataclass
class StudentModules:
    """What the optimiser trains: the student and, for HLD arms, its projection d_student -> d_teacher."""

    model: Any
    projection: Any | None

    @property
    def all(self) -> list[Any]:
        return [self.model] if self.projection is None else [self.model, self.projection]


def forward_letters(
    model: Any, batch_ids: list[list[int]], readout: LetterReadout, hidden_layer: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(letter logits (batch, MAX_CHOICES), hidden state at the answer position (batch, d_student) or None)."""
    device = readout.letter_ids.device
    input_ids, attention_mask, last = (t.to(device) for t in pad_batch(batch_ids, readout.tokenizer))
    output = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=hidden_layer is not None)
    rows = torch.arange(input_ids.shape[0], device=device)
    letter_logits = output.logits[rows, last][:, readout.letter_ids]  # (batch, MAX_CHOICES)
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


def save_student(accelerator: Any, modules: StudentModules, tokenizer: Any, out: Path, description: dict) -> None:
    """save_pretrained the student (LoRA merged in); the HLD projection goes to its own file, unused at inference."""
    from safetensors.torch import save_file

    student = accelerator.unwrap_model(modules.model)
    if hasattr(student, "merge_and_unload"):
        student = student.merge_and_unload()
    student.save_pretrained(out / "model", safe_serialization=True)
    tokenizer.save_pretrained(out / "model")
    (out / "model" / "training.json").write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    if modules.projection is not None:
        weight = accelerator.unwrap_model(modules.projection).weight.detach().float().cpu().contiguous()
        save_file(
            {"weight": weight}, str(out / "model" / PROJECTION_FILE), metadata={"shape": "(d_teacher, d_student)"}
        )
