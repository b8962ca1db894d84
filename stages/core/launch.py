"""Run a stage under an existing multi-process launcher without changing what DVC sees.

dvc.yaml always runs `python -m stages <stage> ...`. With `PROBEKD_LAUNCHER` set, e.g.

    PROBEKD_LAUNCHER="accelerate launch --multi_gpu --num_processes 4" dvc repro
    PROBEKD_LAUNCHER="torchrun --nproc_per_node 2" dvc repro          # CPU (gloo) or GPUs

a stage that supports data parallelism (`extract`, `train`, `pretrain`) re-executes itself as
`<launcher> -m stages <stage> ...`. Environment variables are not stage dependencies, so the number of
processes never makes a cached stage look changed; the stages guarantee that it cannot change results
(extract: byte-identical stores; train: same metrics up to the global batch size, which is a param).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys

LAUNCHER_ENV = "PROBEKD_LAUNCHER"
PARALLEL_STAGES = frozenset({"extract", "train", "pretrain"})
log = logging.getLogger(__name__)


def inside_launcher() -> bool:
    """True in a process started by torchrun / accelerate launch (they set WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ


def launch_command(stage_args: list[str], launcher: str) -> list[str]:
    return [*shlex.split(launcher), "-m", "stages", *stage_args]


def relaunch_if_requested(stage_args: list[str]) -> None:
    """Re-execute under the launcher named by PROBEKD_LAUNCHER (once), then exit with its status."""
    launcher = os.environ.get(LAUNCHER_ENV, "").strip()
    if not launcher or inside_launcher() or not stage_args or stage_args[0] not in PARALLEL_STAGES:
        return
    if "--help" in stage_args:
        return
    command = launch_command(stage_args, launcher)
    log.info("launching: %s", shlex.join(command))
    sys.exit(subprocess.call(command))


def resolve_precision(setting: str) -> str:
    """A mixed-precision setting (`train.mixed_precision`, `pretrain.train.mixed_precision`) with auto resolved:
    bf16 where the GPU supports it, else no."""
    if setting != "auto":
        return setting
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
