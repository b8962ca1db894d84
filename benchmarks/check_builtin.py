"""Measure the builtin task's premise: teacher letters above chance but below a probe on its hidden states.

Pretrains the builtin teacher and student from params.yaml (or overrides), then on the builtin val questions:
- teacher letter accuracy: softmax over the option-letter tokens at the last prompt token;
- per-layer logistic-regression probe on last-token hidden states, 5-fold CV on `--n-probe` labeled examples;
- student letter accuracy before and after gold fine-tuning on 64 labeled train questions.

    .venv/bin/python benchmarks/check_builtin.py [--set teacher.steps=800 ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from stages.core.config import build
from stages.modeling.builtin import BuiltinModelConfig, train_builtin
from stages.sources.builtin_world import TaskConfig, dataset_splits
from stages.sources.prompts import LETTERS, format_prompt


def letter_ids(tokenizer, n_choices: int) -> list[int]:
    return [tokenizer.encode(" " + letter)[0] for letter in LETTERS[:n_choices]]


def last_token_outputs(model, tokenizer, examples: list[dict]):
    """(letter logits (n, n_choices), hidden (n, layers, d_model)) at the last prompt token."""
    ids = letter_ids(tokenizer, len(examples[0]["choices"]))
    logits, hidden = [], []
    with torch.no_grad():
        for example in examples:
            batch = tokenizer(format_prompt(example["question"], example["choices"]), return_tensors="pt")
            out = model(**batch, output_hidden_states=True)
            logits.append(out.logits[0, -1, ids])
            hidden.append(torch.stack([h[0, -1] for h in out.hidden_states]))
    return torch.stack(logits).numpy(), torch.stack(hidden).numpy()


def gold_finetune(model, tokenizer, examples: list[dict], steps: int, lr: float) -> None:
    ids = letter_ids(tokenizer, len(examples[0]["choices"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        picks = torch.randint(len(examples), (16,), generator=generator).tolist()
        losses = []
        for k in picks:
            batch = tokenizer(format_prompt(examples[k]["question"], examples[k]["choices"]), return_tensors="pt")
            logits = model(**batch).logits[0, -1, ids]
            losses.append(torch.nn.functional.cross_entropy(logits[None], torch.tensor([examples[k]["answer"]])))
        optimizer.zero_grad()
        torch.stack(losses).mean().backward()
        optimizer.step()
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", nargs="*", default=[], help="overrides like teacher.steps=800")
    parser.add_argument("--seed", type=int, default=None, help="override params.yaml builtin.seed")
    parser.add_argument("--n-probe", type=int, default=256)
    parser.add_argument("--n-eval", type=int, default=512)
    parser.add_argument("--skip-student", action="store_true")
    parser.add_argument("--keep", type=Path, default=None, help="also save the pretrained models under this folder")
    args = parser.parse_args()
    params = yaml.safe_load(Path("params.yaml").read_text())
    builtin = params["builtin"]
    for override in args.set:
        key, value = override.split("=")
        role, name = key.split(".")  # teacher.steps=800: builtin.teacher.steps
        builtin[role][name] = yaml.safe_load(value)
    seed = builtin["seed"] if args.seed is None else args.seed
    task = build(TaskConfig, builtin["task"], "builtin.task")
    splits = dataset_splits(task, seed)
    val = splits["val"][: args.n_eval]
    answers = np.array([e["answer"] for e in val])
    results: dict = {"threads": torch.get_num_threads(), "seed": seed, "builtin": builtin}
    from transformers import AutoModelForCausalLM, AutoTokenizer

    roles = ["teacher"] if args.skip_student else ["teacher", "student"]
    for role in roles:
        config = build(BuiltinModelConfig, builtin[role], f"builtin.{role}")
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            losses = train_builtin(config, task, seed, role, Path(folder))
            results[f"{role}_pretrain_s"] = round(time.perf_counter() - start, 1)
            results[f"{role}_final_loss"] = round(float(np.mean(losses[-20:])), 3)
            model = AutoModelForCausalLM.from_pretrained(folder).eval()
            tokenizer = AutoTokenizer.from_pretrained(folder)
            if args.keep is not None:
                model.save_pretrained(args.keep / role)
                tokenizer.save_pretrained(args.keep / role)
        logits, hidden = last_token_outputs(model, tokenizer, val)
        results[f"{role}_letter_acc"] = round(float((logits.argmax(1) == answers).mean()), 3)
        results[f"{role}_letter_pred_share"] = np.bincount(logits.argmax(1), minlength=4).tolist()
        if role == "teacher":
            probe = []
            for layer in range(hidden.shape[1]):
                classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
                n = args.n_probe
                probe.append(round(float(cross_val_score(classifier, hidden[:n, layer], answers[:n], cv=5).mean()), 3))
            results["probe_cv_acc_per_layer"] = probe
        else:
            gold_finetune(model, tokenizer, splits["train"][:64], steps=60, lr=1e-3)
            logits, _ = last_token_outputs(model, tokenizer, val)
            results["student_gold64_letter_acc"] = round(float((logits.argmax(1) == answers).mean()), 3)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
