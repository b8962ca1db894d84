"""What each stage of the pre-training study reads from params.yaml (its `PARAMS` for `--help` and the reference),
built and checked through the one config contract (stages/core/config.py)."""

from __future__ import annotations

from typing import Any

from stages.core.config import Section, build
from stages.core.errors import InputError
from stages.core.params import section
from stages.modeling.builtin import BuiltinModelConfig
from stages.pretraining.config import (
    ARMS,
    ArmSetup,
    CorpusConfig,
    PretrainEvalConfig,
    PretrainHLDConfig,
    PretrainKDConfig,
    PretrainSeedConfig,
    PretrainTrainConfig,
    SignalConfig,
    StudentConfig,
)
from stages.sources.builtin_world import BUILTIN_SEED, CorpusMix, TaskConfig, read_builtin_seed

CORPUS_PARAMS = [
    Section("pretrain.corpus", CorpusConfig),
    BUILTIN_SEED,
    Section("builtin.task", TaskConfig, "pretrain.corpus.source: builtin"),
    Section("builtin.teacher", BuiltinModelConfig, "pretrain.corpus.source: builtin (its corpus mix)"),
]
SIGNAL_PARAMS = [Section("pretrain.signal", SignalConfig)]
ARM_PARAMS = [
    Section("pretrain", PretrainSeedConfig),
    Section("pretrain.student", StudentConfig),
    Section("pretrain.train", PretrainTrainConfig),
    Section("pretrain.kd", PretrainKDConfig, "arms kd, hldc, hldf"),
    Section("pretrain.hld", PretrainHLDConfig, "arms hldc, hldf"),
]
EVAL_PARAMS = [Section("pretrain.eval", PretrainEvalConfig)]


def pretrain_section(params: dict[str, Any], name: str) -> dict[str, Any]:
    return section(section(params, "pretrain"), name) if name else section(params, "pretrain")


def read_corpus_setup(params: dict[str, Any]) -> tuple[CorpusConfig, tuple[TaskConfig, int, CorpusMix] | None]:
    """The corpus config and, for the builtin source, the builtin world and the builtin teacher's corpus mix."""
    config = build(CorpusConfig, pretrain_section(params, "corpus"), "pretrain.corpus")
    if config.source != "builtin":
        return config, None
    builtin = section(params, "builtin")
    task = build(TaskConfig, section(builtin, "task"), "builtin.task")
    teacher = build(BuiltinModelConfig, section(builtin, "teacher"), "builtin.teacher")
    return config, (task, read_builtin_seed(builtin), teacher.mix)


def read_signal_config(params: dict[str, Any]) -> SignalConfig:
    return build(SignalConfig, pretrain_section(params, "signal"), "pretrain.signal")


def read_arm_setup(arm: str, params: dict[str, Any]) -> ArmSetup:
    """Everything `pretrain@<arm>` reads: pretrain.seed, student, train, and kd / hld for the arms that use them."""
    if arm not in ARMS:
        raise InputError(f"pretrain arm {arm!r} is not one of {', '.join(ARMS)}")
    pretrain = pretrain_section(params, "")
    seed = build(PretrainSeedConfig, {key: pretrain[key] for key in ("seed",) if key in pretrain}, "pretrain").seed
    student = build(StudentConfig, pretrain_section(params, "student"), "pretrain.student")
    train = build(PretrainTrainConfig, pretrain_section(params, "train"), "pretrain.train")
    kd = build(PretrainKDConfig, pretrain_section(params, "kd"), "pretrain.kd") if arm != "nll" else None
    uses_hld = arm in ("hldc", "hldf")
    hld = build(PretrainHLDConfig, pretrain_section(params, "hld"), "pretrain.hld") if uses_hld else None
    return ArmSetup(arm, seed, student, train, kd, hld)


def read_eval_config(params: dict[str, Any]) -> PretrainEvalConfig:
    return build(PretrainEvalConfig, pretrain_section(params, "eval"), "pretrain.eval")
