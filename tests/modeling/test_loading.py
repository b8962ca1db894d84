import torch

from stages.modeling.loading import ModelRef, load_model, resolve
from tests.tiny_models import make_tiny_causal_lm, make_tiny_encoder


def test_local_causal_lm_resolves_and_loads(tmp_path):
    folder = make_tiny_causal_lm(tmp_path / "lm")
    ref = resolve(str(folder), revision=None, trust_remote_code=False)
    assert ref.kind == "causal_lm" and ref.revision.startswith("sha256:") and not ref.builtin
    model_dir = tmp_path / "teacher"
    model_dir.mkdir()
    ref.save(model_dir)
    assert ModelRef.read(model_dir) == ref
    model, tokenizer, loaded_ref = load_model(model_dir)
    assert loaded_ref == ref and not model.training
    ids = tokenizer("A. apple\nAnswer:", return_tensors="pt").input_ids
    assert model(ids).logits.shape == (1, ids.shape[1], len(tokenizer))


def test_encoder_is_detected_and_content_hash_tracks_weights(tmp_path):
    folder = make_tiny_encoder(tmp_path / "enc")
    first = resolve(str(folder), revision=None, trust_remote_code=False)
    assert first.kind == "encoder"
    make_tiny_encoder(folder, seed=1)  # other weights, same files
    assert resolve(str(folder), revision=None, trust_remote_code=False).revision != first.revision
    model_dir = tmp_path / "teacher"
    model_dir.mkdir()
    first.save(model_dir)
    model, _, _ = load_model(model_dir)
    assert not hasattr(model, "lm_head") and isinstance(model, torch.nn.Module)
