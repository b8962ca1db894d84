"""Score one pre-trained arm: held-out log-perplexity (overall and per position bucket) and zero-shot downstream
accuracy by cloze likelihood on the multiple-choice test split the first pipeline prepared."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.core.cli import DEFAULT_PARAMS, ParamsFile
from stages.core.config import Section, build
from stages.core.errors import exits_cleanly
from stages.core.params import load_params, section
from stages.pretraining.setup import EVAL_PARAMS, read_eval_config
from stages.sources.prompts import PromptConfig

__all__ = ["PARAMS", "main"]
PARAMS = [*EVAL_PARAMS, Section("prompt", PromptConfig, "only prompt.cloze_template is used")]


@exits_cleanly
def main(
    arm: Annotated[str, typer.Argument(help="Arm: nll, kd, hldc or hldf.")],
    student: Annotated[Path, typer.Option(help="The arm's folder (data/pretrain/students/<arm>).")],
    corpus: Annotated[Path, typer.Option(help="The packed corpus folder (its val sequences).")],
    test: Annotated[Path, typer.Option(help="Multiple-choice test split (data/prepared/test.parquet).")],
    out: Annotated[Path, typer.Option(help="The arm's evaluation file (data/pretrain/eval/<arm>.json).")],
    params_file: ParamsFile = DEFAULT_PARAMS,
) -> None:
    """Held-out log-perplexity and zero-shot cloze accuracy of one arm."""
    params = load_params(f"pretrain_eval@{arm}", params_file)
    config = read_eval_config(params)
    prompt = build(PromptConfig, section(params, "prompt"), "prompt")
    from stages.pretraining.evaluation import evaluate_arm

    evaluate_arm(arm, student, corpus, test, prompt, config, out)
