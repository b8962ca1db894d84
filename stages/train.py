"""Train one student arm (gold, logit_kd, probe_kd, hld, or any arm defined in `distill.arms`).

Every arm shares the optimiser, schedule, batch stream, step budget and seed; only the loss terms differ
(`distill.arms.<arm>`: which soft labels to distil from, whether to add the HLD term). Writes
`data/students/<arm>/`: `model/` (save_pretrained, with tokenizer; `hld_projection.safetensors` beside it
for HLD arms, unused at inference), `metrics.json`, `live/` (DVCLive learning curves), `calibration.csv`
and `confusion.csv`, all renamed into place together when training finished.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from stages.errors import InputError, exits_cleanly
from stages.params import load_params, section

log = logging.getLogger(__name__)
SOFT_LABEL_FILES = {"teacher": "data/labels/teacher.parquet", "probe": "data/labels/probe.parquet"}
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """The `train` section: what every arm shares."""

    steps: int = 300
    """Optimiser steps (the budget every arm gets)."""
    batch_size: int = 32
    """Rows per step (global, over all processes): labeled plus transfer rows."""
    transfer_fraction: float = 0.5
    """Share of each batch drawn from `transfer` (the rest from `labeled`)."""
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    """Linear warm-up over this share of steps, then linear decay to 0."""
    max_grad_norm: float = 1.0
    eval_every: int = 50
    """Validation accuracy every this many steps (and at the end) into the learning curves."""
    mixed_precision: str = "auto"
    """auto (bf16 on a GPU that supports it, else no) | no | fp16 | bf16."""
    lora: bool = False
    """LoRA adapters (peft) instead of full fine-tuning; merged into the saved student."""
    lora_rank: int = 8

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or self.eval_every < 1 or self.lora_rank < 1:
            raise InputError("train.steps, train.eval_every, train.lora_rank must be >= 1 and batch_size >= 2")
        if not 0 <= self.transfer_fraction < 1:
            raise InputError(f"train.transfer_fraction={self.transfer_fraction}: must be in [0, 1)")
        if not 0 <= self.warmup_fraction <= 1 or self.lr <= 0:
            raise InputError("train.warmup_fraction must be in [0, 1] and train.lr > 0")
        if self.mixed_precision not in MIXED_PRECISION:
            raise InputError(f"train.mixed_precision={self.mixed_precision!r}: use one of {MIXED_PRECISION}")

    @property
    def transfer_per_step(self) -> int:
        return round(self.batch_size * self.transfer_fraction)

    @property
    def labeled_per_step(self) -> int:
        return self.batch_size - self.transfer_per_step


@dataclass(frozen=True)
class ArmConfig:
    """One entry of `distill.arms`: the loss terms of an arm."""

    soft_labels: str | None = None
    """null (gold CE only), teacher (logit KD) or probe (probe KD)."""
    hld: bool = False
    """Add gamma x the HLD hint term (on top of whatever else the arm does)."""

    def __post_init__(self) -> None:
        if self.soft_labels is not None and self.soft_labels not in SOFT_LABEL_FILES:
            raise InputError(f"distill.arms: soft_labels={self.soft_labels!r}; use null, teacher or probe")


@dataclass(frozen=True)
class KDConfig:
    """`distill.kd`: alpha x CE(gold) + (1 - alpha) x T^2 x KL(p_target^T || p_student^T)."""

    alpha: float = 0.5
    temperature: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1 or self.temperature <= 0:
            raise InputError(f"distill.kd: alpha={self.alpha} must be in [0, 1], temperature={self.temperature} > 0")


@dataclass(frozen=True)
class HLDConfig:
    """`distill.hld`: gamma x nMSE(W h_student[student_layer], h_teacher[teacher_layer]) at the answer position."""

    gamma: float = 0.1
    teacher_layer: int | str = "middle"
    """middle, or a teacher layer index (0 = embedding output, negative from the last)."""
    student_layer: int | str = "middle"
    mode: str = "joint"
    """joint (one summed loss) | sequential (hint phase on the HLD term alone, then the arm's other terms)."""
    hint_fraction: float = 0.05

    def __post_init__(self) -> None:
        if self.mode not in ("joint", "sequential"):
            raise InputError(f"distill.hld.mode={self.mode!r}: use joint or sequential")
        for name in ("teacher_layer", "student_layer"):
            value = getattr(self, name)
            if value != "middle" and not isinstance(value, int):
                raise InputError(f"distill.hld.{name}={value!r}: use middle or an integer layer index")
        if self.gamma < 0 or not 0 <= self.hint_fraction < 1:
            raise InputError("distill.hld.gamma must be >= 0 and hint_fraction in [0, 1)")


def arm_configs(arm: str, params: dict[str, Any]) -> tuple[ArmConfig, KDConfig | None, HLDConfig | None]:
    """The arm's terms and only the distill sub-sections it uses (dvc.yaml lists only those)."""
    distill = section(params, "distill")
    arms = distill.get("arms") or {}
    if arm not in arms:
        raise InputError(f"arm {arm!r} is not in distill.arms (defined: {sorted(arms)}); add it to params.yaml")
    spec = ArmConfig(**(arms[arm] or {}))
    kd = KDConfig(**section(distill, "kd")) if spec.soft_labels else None
    hld = HLDConfig(**section(distill, "hld")) if spec.hld else None
    return spec, kd, hld


def resolve_layer(layer: int | str, n_layers: int, what: str) -> int:
    """`middle` -> n_layers // 2; negative counts from the last. n_layers counts the embedding output."""
    index = n_layers // 2 if layer == "middle" else int(layer)
    resolved = index + n_layers if index < 0 else index
    if not 0 <= resolved < n_layers:
        raise InputError(f"{what}={layer} but the model has hidden-state layers 0..{n_layers - 1}")
    return resolved


@exits_cleanly
def main(
    arm: Annotated[str, typer.Argument(help="Arm name, a key of distill.arms (gold, logit_kd, probe_kd, hld).")],
    root: Annotated[Path, typer.Option(help="Project folder holding data/.")] = Path("."),
) -> None:
    """Train one student arm on the prepared splits; write data/students/<arm>/."""
    from stages.train_loop import run_arm

    params = load_params(f"train@{arm}")
    spec, kd, hld = arm_configs(arm, params)
    config = TrainConfig(**section(params, "train"))
    metrics = run_arm(arm, spec, kd, hld, config, params, root)
    log.info("%s: %s", arm, json.dumps(metrics))


def describe(arm: str, spec: ArmConfig, kd: KDConfig | None, hld: HLDConfig | None, config: TrainConfig) -> dict:
    """The config recorded next to the saved student."""
    return {
        "arm": arm,
        "terms": asdict(spec),
        "kd": asdict(kd) if kd else None,
        "hld": asdict(hld) if hld else None,
        "train": asdict(config),
    }
