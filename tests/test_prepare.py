"""The `prepare` stage command: --raw/--out, the params file, exit 2 on bad input, the old output kept on failure.

The split rule is tested in tests/sources/test_splits.py, the config and the run in tests/sources/test_preparation.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from stages.__main__ import build_app
from stages.sources.schema import SPLITS, read_split

DATA = Path(__file__).resolve().parent / "data"


def write_params(folder: Path, dataset: str, **data) -> Path:
    params = {
        "seed": 0,
        "data": {"dataset": dataset, "path": None, "labeled": 2, "transfer": 3, "val": 2, "test": 2,
                 "on_invalid": "error", "allow_untracked": True, **data},  # test files lie outside data/raw/
        "builtin": {"task": {}},
    }  # fmt: skip
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def run_prepare(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "stages", "prepare", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def test_cli_writes_the_four_splits_into_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, str(DATA / "canonical" / "examples.jsonl"))
    done = CliRunner().invoke(build_app("prepare"), ["prepare", "--raw", "data/raw", "--out", "prepared"])
    assert done.exit_code == 0, done.output
    assert {name: read_split(tmp_path / "prepared" / f"{name}.parquet").n_examples for name in SPLITS} == {
        "labeled": 2, "transfer": 3, "val": 2, "test": 2,
    }  # fmt: skip


def test_cli_bad_input_exits_2_and_leaves_nothing(tmp_path):
    write_params(tmp_path, str(DATA / "bad" / "answer_out_of_range.jsonl"))
    done = run_prepare(tmp_path, "--raw", "data/raw", "--out", "data/prepared")
    assert done.returncode == 2
    assert "answer_out_of_range.jsonl line 2: answer 3 out of range for 3 choices" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_cli_too_large_request_keeps_the_old_output_untouched(tmp_path):
    params = write_params(tmp_path, str(DATA / "canonical" / "examples.jsonl"))
    out = tmp_path / "prepared"
    options = ["--params-file", str(params), "--raw", str(tmp_path / "raw"), "--out", str(out)]
    assert run_prepare(tmp_path, *options).returncode == 0
    before = {name: (out / f"{name}.parquet").read_bytes() for name in SPLITS}
    write_params(tmp_path, str(DATA / "canonical" / "examples.jsonl"), labeled=5, transfer=5)
    done = run_prepare(tmp_path, *options)
    assert done.returncode == 2 and "data.labeled=5 + data.transfer=5 = 10" in done.stderr
    assert {name: (out / f"{name}.parquet").read_bytes() for name in SPLITS} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "prepared"]


def test_cli_paths_have_no_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, str(DATA / "canonical" / "examples.jsonl"))
    app = build_app("prepare")
    done = CliRunner().invoke(app, ["prepare", "--out", "prepared"])
    assert done.exit_code == 2 and "Missing option '--raw'" in done.stderr
    done = CliRunner().invoke(app, ["prepare", "--raw", "data/raw"])
    assert done.exit_code == 2 and "Missing option '--out'" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
