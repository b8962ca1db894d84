"""What `train@<arm>` reads from params.yaml: the shared `train` budget, the arm's loss terms
(`distill.arms.<arm>`), and only the `distill` sub-sections that arm uses (dvc.yaml lists only those)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from stages.core.config import SEED, Section, build, read_seed
from stages.core.errors import InputError
from stages.core.params import section
from stages.sources.prompts import PromptConfig


@dataclass(frozen=True)
class TrainConfig:
    """The `train` section: what every arm shares."""

    steps: int = 300
    """Optimiser steps (the budget every arm gets)."""
    batch_size: int = 32
    """Rows per step (global, over all processes): labeled plus transfer rows."""
    transfer_fraction: float = 0.5
    """Share of each batch drawn from `transfer` (the rest from `labeled`; the gold arm skips them)."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_fraction: float = 0.05
    """Linear warm-up over this share of steps, then linear decay to 0."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    eval_every: int = 50
    """Validation accuracy every this many steps (and at the end) into the learning curves."""
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    """auto (bf16 on a GPU that supports it, else no) | no | fp16 | bf16."""
    lora: bool = False
    """LoRA adapters (peft) instead of full fine-tuning; merged into the saved student."""
    lora_rank: int = 8
    """LoRA rank (with lora: true)."""

    def __post_init__(self) -> None:
        for name, minimum in (("steps", 1), ("batch_size", 2), ("eval_every", 1), ("lora_rank", 1)):
            if getattr(self, name) < minimum:
                raise InputError(f"params.yaml: train.{name}={getattr(self, name)} must be >= {minimum}")
        if not 0 <= self.transfer_fraction < 1:
            raise InputError(f"params.yaml: train.transfer_fraction={self.transfer_fraction} must be in [0, 1)")
        if not 0 <= self.warmup_fraction <= 1:
            raise InputError(f"params.yaml: train.warmup_fraction={self.warmup_fraction} must be in [0, 1]")
        for name in ("lr", "max_grad_norm"):
            if getattr(self, name) <= 0:
                raise InputError(f"params.yaml: train.{name}={getattr(self, name)} must be > 0")
        if self.weight_decay < 0:
            raise InputError(f"params.yaml: train.weight_decay={self.weight_decay} must be >= 0")

    @property
    def transfer_per_step(self) -> int:
        return round(self.batch_size * self.transfer_fraction)

    @property
    def labeled_per_step(self) -> int:
        return self.batch_size - self.transfer_per_step


@dataclass(frozen=True)
class ArmConfig:
    """One entry of `distill.arms`: the loss terms of an arm."""

    soft_labels: Literal["teacher", "cloze", "probe"] | None = None
    """null (gold CE only), teacher (KD on the teacher's letter outputs), cloze (KD on its cloze distribution) or
    probe (probe KD)."""
    hld: bool = False
    """Add gamma x the HLD hint term (on top of whatever else the arm does)."""
    gold_transfer: bool = False
    """CE on transfer's gold answers too, which every other arm never sees: the oracle, full supervision on the
    same questions and budget (the ceiling the performance gap recovered is measured against)."""


@dataclass(frozen=True)
class KDConfig:
    """`distill.kd`: alpha x CE(gold) + (1 - alpha) x T^2 x KL(p_target^T || p_student^T)."""

    alpha: float = 0.5
    """Weight of CE(gold) on labeled rows; (1 - alpha) on the KL term (labeled + transfer)."""
    temperature: float = 2.0
    """KD temperature T (the KL term is scaled by T^2)."""

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise InputError(f"params.yaml: distill.kd.alpha={self.alpha} must be in [0, 1]")
        if self.temperature <= 0:
            raise InputError(f"params.yaml: distill.kd.temperature={self.temperature} must be > 0")


@dataclass(frozen=True)
class HLDConfig:
    """`distill.hld`: gamma x nMSE(W h_student[student_layer], h_teacher[teacher_layer]) at the answer position."""

    gamma: float = 0.1
    """Weight of the normalised-MSE hint term (labeled + transfer rows)."""
    teacher_layer: Literal["middle"] | int = "middle"
    """middle, or a teacher layer index (0 = embedding output, negative from the last)."""
    student_layer: Literal["middle"] | int = "middle"
    """middle, or a student layer index (0 = embedding output, negative from the last)."""
    mode: Literal["joint", "sequential"] = "joint"
    """joint (one summed loss) | sequential (hint phase on the HLD term alone, then the arm's other terms)."""
    hint_fraction: float = 0.05
    """Sequential mode only: share of steps in the hint phase."""

    def __post_init__(self) -> None:
        if self.gamma < 0:
            raise InputError(f"params.yaml: distill.hld.gamma={self.gamma} must be >= 0")
        if not 0 <= self.hint_fraction < 1:
            raise InputError(f"params.yaml: distill.hld.hint_fraction={self.hint_fraction} must be in [0, 1)")


@dataclass(frozen=True)
class TrainSetup:
    """Everything `train@<arm>` reads from params.yaml, checked."""

    arm: str
    terms: ArmConfig
    kd: KDConfig | None
    hld: HLDConfig | None
    train: TrainConfig
    prompt: PromptConfig
    seed: int

    def describe(self) -> dict[str, Any]:
        """The config recorded next to the saved student."""
        return {
            "arm": self.arm,
            "terms": asdict(self.terms),
            "kd": asdict(self.kd) if self.kd else None,
            "hld": asdict(self.hld) if self.hld else None,
            "train": asdict(self.train),
        }


@dataclass(frozen=True)
class TrainPaths:
    """Where `train@<arm>` reads and writes; dvc.yaml names every one of them."""

    prepared: Path
    """Folder of the prepared {labeled,transfer,val,test}.parquet."""
    student: Path
    """The student's model folder (data/models/student)."""
    out: Path
    """The arm's output folder, replaced atomically."""
    soft_labels: Path | None = None
    """The label parquet the arm distils from (arms with soft_labels)."""
    hidden: tuple[Path, ...] = ()
    """The teacher's hidden-state stores of labeled and transfer, in that order (HLD arms)."""


PARAMS = [
    SEED,
    Section("prompt", PromptConfig),
    Section("train", TrainConfig),
    Section("distill.arms.<arm>", ArmConfig),
    Section("distill.kd", KDConfig, "arms with soft_labels"),
    Section("distill.hld", HLDConfig, "arms with hld: true"),
]


def read_train_setup(arm: str, params: dict[str, Any]) -> TrainSetup:
    """The arm's setup from the params dvc.yaml lists for `train@<arm>`."""
    distill = section(params, "distill")
    arms = distill.get("arms") or {}
    if arm not in arms:
        raise InputError(f"params.yaml: distill.arms.{arm} is not defined (defined: {sorted(arms)}); add it")
    terms = build(ArmConfig, arms[arm] if arms[arm] is not None else {}, f"distill.arms.{arm}")
    kd = build(KDConfig, section(distill, "kd"), "distill.kd") if terms.soft_labels else None
    hld = build(HLDConfig, section(distill, "hld"), "distill.hld") if terms.hld else None
    train = build(TrainConfig, section(params, "train"), "train")
    prompt = build(PromptConfig, section(params, "prompt"), "prompt")
    return TrainSetup(arm, terms, kd, hld, train, prompt, read_seed(params))
