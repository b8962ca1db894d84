"""Saving the student (stages/student/model.py): the save_pretrained folder has the same bytes in every process."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.tiny_models import make_tiny_causal_lm
from tests.two_processes import assert_same_bytes_in_two_processes

D_STUDENT, D_TEACHER = 32, 48


class NoAccelerator:
    """save_student's accelerator outside a launcher: nothing to unwrap."""

    def unwrap_model(self, model):
        return model


def save_lora_student(model_dir: Path, out: Path) -> None:
    """The tiny model with seeded non-zero LoRA adapters and an HLD projection, saved as the trainer saves it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stages.student.model import StudentModules, add_lora, save_student

    torch.manual_seed(0)
    model = add_lora(AutoModelForCausalLM.from_pretrained(model_dir), SimpleNamespace(lora_rank=4))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: non-zero adapters make the merge change the weights
                parameter.normal_(std=0.02)
    modules = StudentModules(model, torch.nn.Linear(D_STUDENT, D_TEACHER, bias=False))
    description = {"arm": "hld", "train": {"lora": True, "lora_rank": 4}}
    save_student(NoAccelerator(), modules, AutoTokenizer.from_pretrained(model_dir), out, description)


@pytest.mark.slow  # two fresh interpreters importing transformers and peft: ~20 CPU seconds before any work
def test_lora_merged_student_folder_has_the_same_bytes_in_two_processes(tmp_path):
    pytest.importorskip("peft")
    model_dir = make_tiny_causal_lm(tmp_path / "tiny", d_model=D_STUDENT, n_layers=2)
    code = "import sys; from pathlib import Path; from tests.student.test_model import save_lora_student; "
    code += f"save_lora_student(Path({str(model_dir)!r}), Path(sys.argv[1]))"
    files = assert_same_bytes_in_two_processes(code, tmp_path / "saved")
    expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "training.json"}
    assert expected | {"hld_projection.safetensors"} <= {name.removeprefix("model/") for name in files}
