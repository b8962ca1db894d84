"""benchmarks/gpu_check.sh: the real script, in its CPU dry run (slow tier), and its environment check."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
ROWS = [
    "bf16 matmul",
    "extract",
    "bare forward",
    "naive loop",
    "probe fit, torch on cpu",
    "probe fit, sklearn on CPU",
    "student train step",
]
NUMBER = r"[0-9][0-9.e+-]*"


def run_check(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_dry_run_prints_every_row_with_numbers():
    done = run_check("--dry-run")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "DRY RUN on CPU" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    header, body = rows[0], rows[1:]
    assert "TFLOPS" in header and "peak GPU memory" in header
    for name in ROWS:
        matching = [row for row in body if row.startswith(f"| {name}")]
        assert matching, f"no row {name!r} in:\n{done.stdout}"
        for row in matching:
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            assert float(cells[1]) > 0, row  # seconds
            assert re.match(NUMBER, cells[2]), row  # throughput
    assert sum(row.startswith("| probe fit, torch") for row in body) == 2  # the dual and the primal path
    assert "dual" in done.stdout and "primal" in done.stdout
    summary = done.stdout.splitlines()[-1]
    assert re.search(rf"extract / bare forward = {NUMBER}; extract / naive loop = {NUMBER}x", summary), summary


@pytest.mark.skipif(torch.cuda.is_available(), reason="the check only fails where no CUDA device is visible")
def test_without_a_gpu_the_check_stops_with_one_line():
    done = run_check()
    assert done.returncode == 1
    assert done.stdout == ""
    assert re.fullmatch(r"gpu_check: no CUDA device visible to torch .*; run on a GPU machine, or pass --dry-run\n",
                        done.stderr), done.stderr  # fmt: skip
