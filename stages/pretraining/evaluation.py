"""`pretrain_eval@<arm>`: each arm's held-out log-perplexity (the study's headline metric),
per position bucket, and its zero-shot downstream accuracy by cloze likelihood (stages/modeling/cloze.py, as the
first pipeline scores its teacher and students) on the multiple-choice test split `prepare` wrote.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.atomic import write_text_atomic
from stages.core.errors import InputError
from stages.core.metrics import masked_softmax
from stages.pretraining.config import PretrainEvalConfig
from stages.pretraining.corpus import read_corpus, read_lengths
from stages.pretraining.trainer import position_nll
from stages.sources.prompts import PromptConfig
from stages.sources.schema import read_split

log = logging.getLogger(__name__)


def downstream(model: Any, tokenizer: Any, test_path: Path, prompt: PromptConfig, batch_size: int) -> np.ndarray:
    """(n_questions,) bool: whether the cloze readout picks the right option of each test question."""
    from stages.modeling.cloze import ClozeScorer, score_examples, tokenize_cloze

    split = read_split(test_path)
    tokens = tokenize_cloze(tokenizer, split.questions, split.choices, prompt.cloze_template, split.ids)
    scorer = ClozeScorer(model, tokenizer.pad_token_id, "right")
    scores = score_examples(scorer, tokens, 0, split.n_examples, batch_size)
    picked = np.argmax(masked_softmax(scores, split.valid_mask()), axis=-1)
    return picked == np.asarray(split.answers)


def evaluate_arm(
    arm: str, student: Path, corpus: Path, test_path: Path, prompt: PromptConfig, config: PretrainEvalConfig, out: Path
) -> dict[str, Any]:
    """Score the arm's student and write `out` (json): val_logppl, val_logppl_bucket<i>, downstream_correct, ..."""
    import torch

    training = json.loads((student / "training.json").read_text()) if (student / "training.json").exists() else None
    if training is None:
        raise InputError(f"{student}: not a trained arm (run `dvc repro pretrain@{arm}` first)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(student / "model", dtype=torch.float32, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(student / "model")  # the teacher's, saved with the student
    _, val, _ = read_corpus(corpus)
    _, lengths = read_lengths(corpus)
    if config.position_buckets > val.shape[1] - 1:
        raise InputError(
            f"params.yaml: pretrain.eval.position_buckets={config.position_buckets} is more than the "
            f"{val.shape[1] - 1} predicted positions of a sequence"
        )
    sums, counts = position_nll(model, val, config.batch_size, lengths)
    n_buckets = config.position_buckets
    pairs = zip(np.array_split(sums, n_buckets), np.array_split(counts, n_buckets), strict=True)
    # pooled over tokens; a bucket no document reaches (all padding) is left out, not written as NaN
    buckets = {i: float(s.sum() / c.sum()) for i, (s, c) in enumerate(pairs) if c.sum()}
    overall = float(sums.sum() / counts.sum())
    correct = downstream(model, tokenizer, test_path, prompt, config.batch_size)
    result = {
        "arm": arm,
        "val_logppl": overall,
        **{f"val_logppl_bucket{i}": value for i, value in buckets.items()},
        "downstream_acc": float(correct.mean()) if len(correct) else float("nan"),
        "downstream_correct": correct.astype(int).tolist(),
        "train_flops": float(training["train_flops"]),
        "train_tokens": int(training["train_tokens"]),
    }
    write_text_atomic(out, json.dumps(result, indent=2, sort_keys=True) + "\n")
    log.info("%s: val log-ppl %.4f, downstream cloze accuracy %.3f", arm, overall, result["downstream_acc"])
    return result
