"""A temporary git+DVC repo holding this checkout's pipeline on a tiny configuration, for the `dvc repro` tests.

The repo gets `stages/`, `dvc.yaml`, `data/raw/README.md` and `params.yaml` with the `TINY` overrides, is
committed once, and is ready for `dvc repro`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# The pre-training study at a few CPU seconds per stage (every `dvc repro` of these repos runs it too).
PRETRAIN_TINY = {
    "corpus": {"seq_len": 32, "train_tokens": 2048, "val_tokens": 256},
    "signal": {"top_k": 8, "batch_size": 16, "shard_sequences": 16},
    "student": {"d_model": 16, "n_layers": 2, "n_heads": 2},
    "train": {"steps": 4, "batch_size": 8, "eval_every": 2},
    "eval": {"batch_size": 16},
}
# Small enough for a few CPU minutes in all; every key must already exist in params.yaml.
TINY = {
    "data": {"labeled": 24, "transfer": 48, "val": 24, "test": 32},
    "builtin": {
        "task": {"n_train": 96, "n_val": 24, "n_test": 32},
        "teacher": {"steps": 60},
        "student": {"steps": 20},
    },
    "extract": {"batch_size": 16, "shard_examples": 16},
    "probe": {"folds": 3},
    "train": {"steps": 6, "batch_size": 8, "eval_every": 3},
    "pretrain": PRETRAIN_TINY,
}
# The builtin story at a fraction of the default's cost: the default builtin teacher and student (the part that
# takes minutes: they must learn the world for the story to show), smaller splits, a shorter student budget.
# 120 student steps left probe_kd within a point of logit_kd on one machine (57.0% vs 56.3%) while the probe was at
# 100%: too short a budget for the student to learn from any labels. 300 steps, as the default run.
SMALL = {
    "data": {"labeled": 32, "transfer": 192, "val": 64, "test": 128},
    "extract": {"batch_size": 32, "shard_examples": 64},
    "train": {"steps": 300, "batch_size": 16, "eval_every": 100},
    "pretrain": PRETRAIN_TINY,
}


def merge_existing(params: dict, overrides: dict, path: str = "") -> None:
    for key, value in overrides.items():
        assert key in params, f"test override {path}{key} is not a key of params.yaml"
        if isinstance(value, dict):
            merge_existing(params[key], value, f"{path}{key}.")
        else:
            params[key] = value


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command with this interpreter's bin folder first on PATH (dvc runs `python -m stages ...`)."""
    env = {**os.environ, **(env or {})}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def dvc(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    return run([sys.executable, "-m", "dvc", *args], cwd, env)


def dvc_json(*args: str, cwd: Path) -> object:
    done = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def make_tiny_repo(repo: Path, overrides: dict | None = None) -> Path:
    """Lay out and commit the pipeline in `repo` (an empty folder) with `overrides` (default TINY) applied to
    params.yaml; `dvc repro` is the caller's."""
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    (repo / "data" / "raw").mkdir(parents=True)  # a dep of prepare: its README only, no local datasets
    shutil.copy(ROOT / "data" / "raw" / "README.md", repo / "data" / "raw" / "README.md")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    merge_existing(params, TINY if overrides is None else overrides)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], repo)
    run(["git", "config", "user.email", "test@example.invalid"], repo)
    run(["git", "config", "user.name", "test"], repo)
    dvc("init", "-q", cwd=repo)
    dvc("config", "core.analytics", "false", cwd=repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny pipeline"], repo)
    return repo


def stages_run(output: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` output says it ran, less the `fingerprint@<role>` stages, which run on
    every repro by design (`always_changed`) and change nothing downstream unless a local model folder did."""
    return set(re.findall(r"Running stage '([^']+)'", output)) - {"fingerprint@teacher", "fingerprint@student"}
