"""teacher_signal: the cached top-k log-probs, ids and hidden states equal a plain forward within float16
tolerance; the store describes itself; a killed run resumes to identical bytes; online stores no arrays."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stages.core.errors import InputError
from stages.modeling.loading import load_model
from stages.pretraining.config import SignalConfig
from stages.pretraining.corpus import read_corpus
from stages.pretraining.signal_store import SignalStore, run
from stages.store.writer import DONE, partial_path

CONFIG = SignalConfig(top_k=7, layer="middle", batch_size=4, shard_sequences=5, device="cpu")


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cached_signal_equals_a_plain_forward(teacher_dir, corpus_dir, tmp_path):
    train, _, _ = read_corpus(corpus_dir)
    attrs = run(CONFIG, train, teacher_dir, tmp_path / "signal.zarr")
    arrays = SignalStore(tmp_path / "signal.zarr").load()
    model, _, _ = load_model(teacher_dir, dtype=torch.float32)
    with torch.no_grad():
        output = model(input_ids=torch.from_numpy(train.astype(np.int64)), output_hidden_states=True)
    log_probs = torch.log_softmax(output.logits, dim=-1)
    values, ids = log_probs.topk(7, dim=-1)
    assert attrs["layer"] == 2 and attrs["top_k"] == 7  # middle of 3 blocks + the embedding output
    np.testing.assert_allclose(arrays["topk_logprobs"].astype(np.float32), values.numpy(), rtol=1e-3, atol=1e-3)
    hidden = output.hidden_states[2].numpy()
    np.testing.assert_allclose(arrays["hidden"].astype(np.float32), hidden, rtol=1e-3, atol=1e-3 * np.abs(hidden).max())
    stored_ids = arrays["topk_ids"]
    ties = np.isclose(values.numpy()[..., :-1], values.numpy()[..., 1:], atol=1e-6).any(-1)  # order of equal values
    assert (stored_ids == ids.numpy())[~ties].all()
    mass = values.exp().sum(-1).mean().item()
    assert attrs["mean_kept_mass"] == pytest.approx(mass, rel=1e-4) and 0 < mass < 1
    assert attrs["teacher_params"] == sum(p.numel() for p in model.parameters())
    assert (
        SignalStore(tmp_path / "signal.zarr").attrs["complete"] is True
        and not partial_path(tmp_path / "signal.zarr").exists()
    )


def test_online_store_holds_no_arrays(teacher_dir, corpus_dir, tmp_path):
    train, _, _ = read_corpus(corpus_dir)
    run(SignalConfig(online=True), train, teacher_dir, tmp_path / "online.zarr")
    store = SignalStore(tmp_path / "online.zarr")
    assert store.online and "topk_logprobs" not in store.group


def test_errors(teacher_dir, corpus_dir, tmp_path):
    train, _, _ = read_corpus(corpus_dir)
    with pytest.raises(InputError, match="pretrain.signal.top_k=100000 but the teacher's vocabulary has"):
        run(SignalConfig(top_k=100000, device="cpu"), train, teacher_dir, tmp_path / "s.zarr")
    with pytest.raises(InputError, match="pretrain.signal.layer=9 but the teacher has layers 0..3"):
        run(SignalConfig(layer=9, device="cpu"), train, teacher_dir, tmp_path / "s.zarr")
    with pytest.raises(InputError, match="teacher signal not found"):
        SignalStore(tmp_path / "missing.zarr")


KILL_SCRIPT = """
import os, sys
from pathlib import Path
import stages.pretraining.signal_store as signal_store
from stages.pretraining.config import SignalConfig
from stages.pretraining.corpus import read_corpus

original = signal_store.mark_done
def mark_then_die(group, shard, arrays):
    if shard == 2:  # shards 0 and 1 are finished, shard 2's chunks written but unmarked: die like a SIGKILL
        os.kill(os.getpid(), 9)
    original(group, shard, arrays)
signal_store.mark_done = mark_then_die
config = SignalConfig(top_k=7, batch_size=4, shard_sequences=5, device="cpu")
signal_store.run(config, read_corpus(Path(sys.argv[1]))[0], Path(sys.argv[2]), Path(sys.argv[3]))
"""


@pytest.mark.slow
def test_killed_run_resumes_to_an_identical_cache(teacher_dir, corpus_dir, tmp_path):
    out = tmp_path / "killed.zarr"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(corpus_dir), str(teacher_dir), str(out)], env=env)
    assert done.returncode == -9
    assert sorted(p.name for p in (partial_path(out) / DONE).iterdir()) == ["0", "1"] and not out.exists()
    train, _, _ = read_corpus(corpus_dir)
    run(CONFIG, train, teacher_dir, out)
    run(CONFIG, train, teacher_dir, tmp_path / "clean.zarr")
    assert tree_bytes(out) == tree_bytes(tmp_path / "clean.zarr")
