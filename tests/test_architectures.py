"""The architecture matrix: tiny randomly initialised models from the configs of the families users bring, each
with a tokenizer of its family's style (tests/tiny_models.py; no hub downloads).

For every family: the cached states (answer position and per-option) equal `output_hidden_states=True` of a plain
one-prompt forward, with left and right padding; decoders' letter logits equal the model's own logits at the
answer position (Gemma 2/3 final soft-capping, Cohere's logit scale, Granite's logit scaling, tied heads); encoders
stop after the deepest requested block; decoders train one student step and the saved student reloads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stages.modeling.letters import letter_token_ids
from stages.modeling.loading import load_model, resolve
from stages.sources.prompts import PromptConfig
from stages.sources.schema import read_split, write_split
from stages.store.batches import collate
from tests.test_extract import N_EXAMPLES, make_rows, reference, run
from tests.test_extract_options import decoder_reference
from tests.tiny_models import make_styled_tokenizer

# 1 minute on two lightly loaded cores, 4 to 6 on two busy ones (measured): the slow tier.
pytestmark = pytest.mark.slow

D_MODEL, N_BLOCKS = 32, 2
COMMON = {"hidden_size": D_MODEL, "intermediate_size": 64, "num_hidden_layers": N_BLOCKS, "num_attention_heads": 4,
          "max_position_embeddings": 256}  # fmt: skip
GQA = {"num_key_value_heads": 2}
GEMMA = {**GQA, "head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 16}
# family (transformers model_type) -> (tokenizer style, config overrides); soft-capping and logit scales are set far
# from 1 so that forgetting them would move the letter logits well past the tolerance.
DECODERS = {
    "llama": ("byte_level", {**GQA, "tie_word_embeddings": True}),
    "qwen2": ("byte_level", GQA),
    "qwen3": ("byte_level", {**GQA, "head_dim": 8}),
    "mistral": ("metaspace", GQA),
    "gemma": ("metaspace", {**GQA, "head_dim": 8}),
    "gemma2": ("metaspace", {**GEMMA, "final_logit_softcapping": 0.5}),
    "gemma3_text": ("metaspace", {**GEMMA, "final_logit_softcapping": 0.5}),
    "phi3": ("metaspace", GQA),
    "gpt2": ("byte_level", {"n_inner": 64}),
    "gpt_neox": ("byte_level", {}),
    "opt": ("byte_level", {"ffn_dim": 64, "word_embed_proj_dim": D_MODEL}),
    "falcon": ("byte_level", {}),
    "cohere": ("byte_level", {**GQA, "logit_scale": 4.0}),
    "granite": ("byte_level", {**GQA, "logits_scaling": 0.25}),
}
ENCODERS = {
    "bert": ("wordpiece", {}),
    "roberta": ("wordpiece", {}),
    "deberta-v2": ("wordpiece", {}),
    "modernbert": ("wordpiece", {"global_attn_every_n_layers": 2, "local_attention": 16}),
}
_BUILT: dict[str, Path] = {}


def build(family: str, root: Path) -> Path:
    """data/models/<role>-style folder of a tiny random `family` model (built once per test session)."""
    if family in _BUILT:
        return _BUILT[family]
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    style, overrides = {**DECODERS, **ENCODERS}[family]
    tokenizer = make_styled_tokenizer(style)
    special = {name: getattr(tokenizer, f"{name}_id") for name in ("pad_token", "bos_token", "eos_token",
                                                                    "cls_token", "sep_token")}  # fmt: skip
    config = AutoConfig.for_model(family, vocab_size=len(tokenizer), **COMMON, **overrides,
                                  **{k + "_id": v for k, v in special.items() if v is not None})  # fmt: skip
    torch.manual_seed(0)
    model = (AutoModelForCausalLM if family in DECODERS else AutoModel).from_config(config)
    folder = root / family
    model.save_pretrained(folder / "weights")
    tokenizer.save_pretrained(folder / "weights")
    resolve(str(folder / "weights"), revision=None, trust_remote_code=False).save(folder)
    _BUILT[family] = folder
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("families")


@pytest.fixture(scope="module")
def split_path(root) -> Path:
    write_split(make_rows(N_EXAMPLES), root / "test.parquet")
    return root / "test.parquet"


@pytest.mark.parametrize("family", [*DECODERS, *ENCODERS])
def test_cached_states_equal_a_plain_forward(family, root, split_path, tmp_path, monkeypatch):
    model_dir = build(family, root)
    split = read_split(split_path)
    expected, expected_logits, expected_options = None, None, None
    # Decoders: left and right padding both; encoders are always padded right (stages/store/forward.py).
    for side in ("left", "right") if family in DECODERS else ("right",):
        monkeypatch.setattr("stages.store.teacher_pass.collate", lambda t, r, p, _, side=side: collate(t, r, p, side))
        monkeypatch.setattr("stages.store.option_pass.pad_rows", _padded_on(side))
        store = run(model_dir, split_path, tmp_path / f"{side}.zarr")
        if expected is None:
            expected, expected_logits = reference(model_dir, split_path, store.attrs.get("letter_token_ids"))
            if family in DECODERS:
                expected_options = decoder_reference(model_dir, split, PromptConfig())
        got = np.stack([store.read_layer(i) for i in range(N_BLOCKS + 1)], axis=1)
        np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3, err_msg=f"{family}, {side} padding")
        if family in ENCODERS:
            assert store.option_logits() is None and store.attrs["option_rule"] == "pair_mean"
            continue
        logits = store.option_logits()
        for row, n in enumerate(split.n_choices):
            np.testing.assert_allclose(logits[row, :n], expected_logits[row, :n], rtol=1e-3, atol=1e-3,
                                       err_msg=f"{family}, {side} padding: letter logits")  # fmt: skip
            options = np.stack([store.read_option_layer(i, n)[row] for i in range(N_BLOCKS + 1)], axis=1)
            np.testing.assert_allclose(options, expected_options[row], rtol=2e-3, atol=2e-3)


def _padded_on(side: str):
    from stages.modeling.batching import pad_rows

    return lambda sequences, rows, pad_id, _: pad_rows(sequences, rows, pad_id, side)


@pytest.mark.parametrize("family", list(ENCODERS))
def test_encoders_stop_after_the_deepest_requested_block(family, root):
    from stages.store.batches import tokenize_prompts
    from stages.store.forward import LayerGatherer, decoder_layers

    model, tokenizer, _ = load_model(build(family, root), dtype=torch.float32)
    tokens = tokenize_prompts(tokenizer, ["Answer:", "Which is a fruit? Answer:"], ["a", "b"])
    ran: list[int] = []
    for index, block in enumerate(decoder_layers(model.base_model)):
        block.register_forward_hook(lambda *_, index=index: ran.append(index))
    hidden, logits, _ = LayerGatherer(model, [1], None)(collate(tokens, np.array([0, 1]), tokenizer.pad_token_id,
                                                                "right"))  # fmt: skip
    assert ran == [0] and hidden.shape == (2, 1, D_MODEL) and logits is None


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_families_that_cannot_work_say_so_in_one_line(family, tmp_path):
    """Encoder-decoder models have neither one answer-position state per layer nor next-token letters."""
    from transformers import AutoConfig, AutoModel

    from stages.core.errors import InputError

    config = AutoConfig.for_model(family, vocab_size=64, d_model=16, d_ff=32, num_layers=1, num_heads=2,
                                  encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                  decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32)  # fmt: skip
    AutoModel.from_config(config).save_pretrained(tmp_path)
    with pytest.raises(InputError, match=r"^\[.*Model'\]: encoder-decoder models are not supported; use a decoder or "
                       r"encoder$"):  # fmt: skip
        resolve(str(tmp_path), revision=None, trust_remote_code=False)


@pytest.mark.parametrize("style", ["byte_level", "metaspace", "wordpiece"])
def test_letter_rule_is_the_token_read_after_answer(style):
    """Teacher and student share the rule; the ids are what the tokenizer produces for ` A` after `Answer:`."""
    tokenizer = make_styled_tokenizer(style)
    ids, rule = letter_token_ids(tokenizer, 26, "teacher")
    assert (ids, rule) == letter_token_ids(tokenizer, 26, "student")
    assert rule == {"byte_level": "bare", "metaspace": "context", "wordpiece": "space"}[style]
    for letter, token in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", ids, strict=True):
        assert tokenizer.decode([token]).strip() == letter
        if rule != "bare":  # the token really is the one that follows `Answer:` in the prompt
            assert tokenizer.encode(f"Answer: {letter}", add_special_tokens=False)[-1] == token


@pytest.mark.parametrize("family", list(DECODERS))
def test_decoder_students_train_a_step_and_reload(family, root, tmp_path):
    from stages.student.data import encode_split
    from stages.student.evaluation import evaluate
    from stages.student.model import LetterReadout
    from tests.student.test_train import PARAMS, SIZES, project_paths, train

    project = tmp_path / "project"
    (project / "data/prepared").mkdir(parents=True)
    for name, n_examples in SIZES.items():
        write_split(make_rows(n_examples), project / f"data/prepared/{name}.parquet")
    (project / "data/models").mkdir()
    (project / "data/models/student").symlink_to(build(family, root))
    params = {**PARAMS, "train": {**PARAMS["train"], "steps": 1, "eval_every": 1}}
    metrics = train("gold", project, params, project_paths(project, "gold"))
    saved = project / "data/students/gold/model"
    model, tokenizer, _ = load_model(project / "data/models/student", dtype=torch.float32)
    reloaded = type(model).from_pretrained(saved)
    assert json.loads((saved / "training.json").read_text())
    test = encode_split(read_split(project / "data/prepared/test.parquet"), tokenizer, PromptConfig())
    probs = evaluate(reloaded, test, LetterReadout.of(tokenizer), batch_size=4)
    assert (probs.argmax(1) == test.answers).mean() == pytest.approx(metrics["test_acc"])
    before = evaluate(model, test, LetterReadout.of(tokenizer), batch_size=4)
    assert not np.allclose(before, probs)  # the step changed the weights, and the saved ones are the changed ones
