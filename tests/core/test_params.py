import subprocess
import sys

import pytest

from stages.core.errors import InputError
from stages.core.params import load_params, section

DVC_YAML = """\
stages:
  extract:
    foreach: [labeled, test]
    do:
      cmd: echo ${item}
      params: [prompt, extract]
  label:
    cmd: echo
    params: [probe.layer]
"""
PARAMS = "seed: 1\nprompt: {template: t}\nextract: {batch_size: 4}\nprobe: {l2: 0.1, layer: auto}\n"


@pytest.fixture
def dvc_repo(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "params.yaml").write_text(PARAMS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_stage_sees_only_the_params_dvc_yaml_lists(dvc_repo):
    assert load_params("label") == {"probe": {"layer": "auto"}}
    assert load_params("extract@labeled") == {"prompt": {"template": "t"}, "extract": {"batch_size": 4}}


def test_outside_a_dvc_repo_reads_the_yaml(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(PARAMS)
    monkeypatch.chdir(tmp_path)
    assert load_params("label")["probe"] == {"l2": 0.1, "layer": "auto"}


def test_missing_file_and_section_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="params.yaml: parameters file not found"):
        load_params("label")
    with pytest.raises(InputError, match="section `probe` is missing"):
        section({"seed": 0}, "probe")


def test_a_params_file_outside_the_working_folder_is_read_directly(dvc_repo):
    other = dvc_repo / "elsewhere"
    other.mkdir()
    (other / "params.yaml").write_text("seed: 2\nprobe: {layer: 3, l2: 0.5}\n")
    assert load_params("label", other / "params.yaml") == {"seed": 2, "probe": {"layer": 3, "l2": 0.5}}


def test_a_params_file_must_hold_a_mapping(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("- seed\n- data\n")
    with pytest.raises(InputError, match=r"^params\.yaml: expected a mapping at the top level$"):
        load_params("label")
    (tmp_path / "params.yaml").write_text("")
    assert load_params("label") == {}
