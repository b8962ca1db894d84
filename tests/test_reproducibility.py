"""Same inputs, same bytes: two `dvc repro`s in two separate repos record the same hash for every output.

The two runs are separate processes with different PYTHONHASHSEED values, so an artifact whose bytes follow
a process's hash-map order (Python's or Rust's, e.g. safetensors metadata) shows up here. It runs on the tiny
configuration of `tests/pipeline_repo.py`: the default params take several CPU minutes per run, too slow
for CI twice over; the code paths that write the artifacts are the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.pipeline_repo import dvc, make_tiny_repo
from tests.two_processes import written_files

pytestmark = pytest.mark.slow


def out_hashes(repo: Path) -> dict[str, dict[str, str]]:
    """stage -> {output path -> md5} from `dvc.lock`, in its stage order (outs, metrics and plots alike)."""
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {stage: {out["path"]: out["md5"] for out in entry.get("outs", [])} for stage, entry in stages.items()}


def differing_files(a: Path, b: Path) -> list[str]:
    """Files whose bytes differ between two copies of one output (a file, or a folder: sorted relative paths)."""
    if a.is_file() or b.is_file():
        return [] if a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes() else [a.name]
    files_a, files_b = written_files(a), written_files(b)
    return sorted(name for name in files_a.keys() | files_b.keys() if files_a.get(name) != files_b.get(name))


def first_difference(repo_a: Path, repo_b: Path) -> str | None:
    """A message naming the first stage (dvc.lock order) and file whose output hashes differ, or None."""
    hashes_a, hashes_b = out_hashes(repo_a), out_hashes(repo_b)
    if list(hashes_a) != list(hashes_b):
        return f"the two runs locked different stages: {list(hashes_a)} vs {list(hashes_b)}"
    for stage, outs in hashes_a.items():
        for path, md5 in outs.items():
            if hashes_b[stage].get(path) != md5:
                files = differing_files(repo_a / path, repo_b / path)
                where = path if (repo_a / path).is_file() else f"{path}/{files[0] if files else ''}"
                return f"stage {stage}: {where} differs between two runs ({md5} vs {hashes_b[stage].get(path)})"
    return None


def test_two_runs_lock_identical_output_hashes(tmp_path):
    repos = []
    for name, hash_seed in (("a", "1"), ("b", "2")):
        repo = make_tiny_repo(tmp_path / name)
        dvc("repro", cwd=repo, env={"PYTHONHASHSEED": hash_seed})
        repos.append(repo)
    assert out_hashes(repos[0]), "dvc.lock records no outputs"
    difference = first_difference(*repos)
    assert difference is None, difference
