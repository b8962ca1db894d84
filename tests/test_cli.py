import subprocess
import sys
from pathlib import Path

from stages.__main__ import STAGES


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages", *args], capture_output=True, text=True)


def test_help_lists_every_stage():
    done = run_cli("--help")
    assert done.returncode == 0, done.stderr
    for name in STAGES:
        assert name in done.stdout


def test_each_stage_has_help():
    for name in STAGES:
        done = run_cli(name, "--help")
        assert done.returncode == 0, f"{name}: {done.stderr}"
        assert "Usage" in done.stdout


def test_unknown_stage_fails():
    done = run_cli("no-such-stage")
    assert done.returncode != 0


def test_python_without_the_dependencies_says_to_activate_the_environment():
    # -S: no site-packages, as when dvc finds a system `python` on PATH instead of the environment's.
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-S", "-m", "stages", "prepare"], capture_output=True, text=True, cwd=root)
    assert done.returncode != 0
    assert "cannot import typer" in done.stderr and ".venv/bin/activate" in done.stderr
