"""Run one artifact writer in two fresh interpreters and compare what they wrote, byte for byte.

Determinism has to be shown across processes: Python's string hashing (PYTHONHASHSEED) and Rust's hash maps
(safetensors keeps metadata in one) order things differently in each process, and identically within one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def written_files(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under `folder`."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def write_in_process(code: str, out: Path, hash_seed: str) -> dict[str, bytes]:
    """Run `code` in a new interpreter (repo root on sys.path) with `sys.argv[1]` = `out`; what it wrote there."""
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return written_files(out)


def assert_same_bytes_in_two_processes(code: str, tmp_path: Path) -> dict[str, bytes]:
    """`code` writes the same files with the same bytes in two processes; returns the first process's files."""
    first = write_in_process(code, tmp_path / "process-1", "1")
    second = write_in_process(code, tmp_path / "process-2", "2")
    assert first, "the writer wrote nothing"
    assert sorted(first) == sorted(second), f"different files: {sorted(first)} vs {sorted(second)}"
    differing = [name for name in first if first[name] != second[name]]
    assert not differing, f"bytes differ between two processes: {differing}"
    return first
