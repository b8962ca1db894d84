"""The `models <role>` stage command: options, params file, the written folder, clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stages.__main__ import build_app
from tests.tiny_models import make_tiny_causal_lm

ROOT = Path(__file__).resolve().parents[1]


def write_params(folder: Path, role: str, **source) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params[role] = {**params[role], **source}
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def models(*args: str):
    return CliRunner().invoke(build_app("models"), ["models", *args])


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no dvc.yaml here: the params file is read directly
    return tmp_path


def test_local_folder_is_pinned_into_the_out_folder(project):
    folder = make_tiny_causal_lm(project / "lm")
    params = write_params(project, "teacher", model=str(folder))
    out = project / "models" / "teacher"
    done = models("teacher", "--out", str(out), "--params-file", str(params))
    assert done.exit_code == 0, done.output
    saved = json.loads((out / "model_ref.json").read_text())
    assert saved["revision"].startswith("sha256:") and saved["source"] == "lm"  # relative to the root
    assert sorted(p.name for p in out.iterdir()) == ["model_ref.json"]


def test_the_params_file_defaults_to_params_yaml_in_the_working_folder(project):
    folder = make_tiny_causal_lm(project / "lm")
    write_params(project, "student", model=str(folder))
    done = models("student", "--out", "out")
    assert done.exit_code == 0, done.output
    assert json.loads((project / "out" / "model_ref.json").read_text())["source"] == "lm"


def test_out_is_required(project):
    write_params(project, "teacher")
    done = models("teacher")
    assert done.exit_code == 2
    assert (
        done.stderr == "error: give exactly one of --out (resolve the model) and --fingerprint (record its content)\n"
    )


def test_unknown_role_is_a_one_line_error(project):
    write_params(project, "teacher")
    done = models("critic", "--out", "out")
    assert done.exit_code == 2
    assert done.stderr == "error: role must be one of teacher, student; got 'critic'\n"
    assert not (project / "out").exists()


def test_missing_local_folder_is_a_one_line_error_and_writes_nothing(project):
    params = write_params(project, "teacher", model="/no/such/folder")
    done = models("teacher", "--out", str(project / "out"), "--params-file", str(params))
    assert done.exit_code == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("error: params.yaml: teacher.model=/no/such/folder: local folder not found")
    assert "Traceback" not in done.output and not (project / "out").exists()


def test_missing_params_file(project):
    done = models("teacher", "--out", "out", "--params-file", "elsewhere.yaml")
    assert done.exit_code == 2
    assert done.stderr == "error: elsewhere.yaml: parameters file not found (run from the project root)\n"


def test_a_folder_with_no_model_is_a_one_line_error(project):
    (project / "empty").mkdir()
    (project / "empty" / "notes.txt").write_text("weights to come\n")
    params = write_params(project, "teacher", model="empty")
    done = models("teacher", "--out", "out", "--params-file", str(params))
    assert done.exit_code == 2, done.output
    [line] = done.stderr.splitlines()
    assert line.startswith("error: empty: no model transformers can load in this folder (")
    assert line.endswith("give a folder saved with save_pretrained (config.json, safetensors weights, tokenizer)")
    (project / "empty" / "config.json").write_text('{"model_type": "no-such-architecture"}')
    done = models("teacher", "--out", "out", "--params-file", str(params))
    assert done.exit_code == 2 and "no model transformers can load" in done.stderr and "Traceback" not in done.output


def test_fingerprint_changes_exactly_when_the_folder_content_does(project):
    import os

    folder = make_tiny_causal_lm(project / "lm")
    write_params(project, "teacher", model="lm")
    out = project / "fp" / "teacher.json"
    assert models("teacher", "--fingerprint", str(out)).exit_code == 0
    first = json.loads(out.read_text())
    assert first["model"] == "lm" and first["content"].startswith("sha256:")
    assert (project / "fp" / ".teacher.stat.json").exists()  # the size/mtime cache beside it
    weights = folder / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # touched only
    assert models("teacher", "--fingerprint", str(out)).exit_code == 0
    assert json.loads(out.read_text()) == first
    make_tiny_causal_lm(folder, seed=1)  # other weights in place, same file names
    assert models("teacher", "--fingerprint", str(out)).exit_code == 0
    assert json.loads(out.read_text())["content"] != first["content"]
    write_params(project, "student")  # builtin: nothing local to hash
    assert models("student", "--fingerprint", str(project / "fp" / "student.json")).exit_code == 0
    assert json.loads((project / "fp" / "student.json").read_text()) == {"model": "builtin"}


def test_out_and_fingerprint_are_exclusive(project):
    write_params(project, "teacher")
    done = models("teacher", "--out", "a", "--fingerprint", "b.json")
    assert done.exit_code == 2 and done.stderr.startswith("error: give exactly one of --out")
