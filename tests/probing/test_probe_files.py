"""The probe output folder (stages/probing/probe_files.py): same inputs, same bytes; provenance read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from stages.core.errors import InputError
from stages.probing.probe_files import METADATA_KEY, PROBS_FILE, ProbeResult, read_probe_output, write_outputs
from stages.sources.schema import SPLITS, Split
from tests.two_processes import assert_same_bytes_in_two_processes

N_LAYERS, N_SLOTS, D_MODEL = 2, 4, 3
PROVENANCE = {
    "config": {"kind": "logistic", "l2": 0.01, "folds": 2, "calibrate": True, "seed": 0},
    "teacher": {"model": "tiny", "revision": "abc", "kind": "causal_lm"},
    "n_teacher_layers": N_LAYERS,
}


def tiny_splits() -> dict[str, Split]:
    return {
        name: Split(
            ids=[f"{name}-{i}" for i in range(3)],
            questions=["q"] * 3,
            choices=[["a", "b", "c", "d"]] * 3,
            answers=np.array([0, 1, 2]),
            sources=[None] * 3,
            subjects=[None] * 3,
        )
        for name in SPLITS
    }


def tiny_result() -> ProbeResult:
    rng = np.random.default_rng(0)
    probs = {name: rng.dirichlet(np.ones(N_SLOTS), size=(N_LAYERS, 3)).astype(np.float32) for name in SPLITS}
    same = {"temperature": 1.0, "val_acc": 0.5, "test_acc": 0.5, "teacher_test_acc": 0.25}
    rows = [{"layer": layer, "cv_acc": 0.5 + layer / 10, **same} for layer in range(N_LAYERS)]
    return ProbeResult(
        layers=list(range(N_LAYERS)),
        logits={name: torch.from_numpy(np.log(p)) for name, p in probs.items()},
        probs=probs,
        labeled_fold=np.array([0, 1, 0]),
        temperature=np.ones(N_LAYERS, dtype=np.float32),
        weights={"w": torch.from_numpy(rng.normal(size=(N_LAYERS, D_MODEL, N_SLOTS)).astype(np.float32))},
        layer_metrics=rows,
    )


def write_tiny_probe_output(out: Path) -> None:
    write_outputs(out, tiny_result(), tiny_splits(), PROVENANCE)


def test_two_processes_write_the_same_bytes(tmp_path):
    code = "import sys; from pathlib import Path; from tests.probing.test_probe_files import write_tiny_probe_output; "
    code += "write_tiny_probe_output(Path(sys.argv[1]) / 'probe')"
    files = assert_same_bytes_in_two_processes(code, tmp_path)
    expected = {"probs.safetensors", "weights.safetensors", "metrics.json", "layers.json", "plots/layers.csv"}
    assert {name.removeprefix("probe/") for name in files} == expected


def test_provenance_is_one_canonical_json_key_and_reads_back(tmp_path):
    write_tiny_probe_output(tmp_path / "probe")
    for name in (PROBS_FILE, "weights.safetensors"):
        with safe_open(str(tmp_path / "probe" / name), framework="numpy") as handle:
            metadata = handle.metadata()
        assert list(metadata) == [METADATA_KEY]
        text = metadata[METADATA_KEY]
        assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    tensors, read = read_probe_output(tmp_path / "probe", tiny_splits())
    assert read == {**PROVENANCE, "example_ids": {name: split.ids for name, split in tiny_splits().items()}}
    assert tensors["test"].shape == (N_LAYERS, 3, N_SLOTS)


def test_probe_output_without_the_metadata_key_asks_for_a_rerun(tmp_path):
    (tmp_path / "probe").mkdir()
    old_style = {"n_teacher_layers": "2", "example_ids": "{}"}  # one key per value, as older probe stages wrote
    save_file({"layers": torch.arange(2)}, str(tmp_path / "probe" / PROBS_FILE), metadata=old_style)
    with pytest.raises(InputError, match="no 'probekd' metadata.*rerun `dvc repro probe`"):
        read_probe_output(tmp_path / "probe", tiny_splits())
