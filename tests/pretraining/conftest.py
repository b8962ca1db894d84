"""A tiny causal teacher laid out like data/models/teacher, and a packed corpus of its tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.modeling.loading import resolve
from stages.pretraining.config import CorpusConfig
from stages.pretraining.corpus import run as pack_corpus
from tests.tiny_models import make_tiny_causal_lm


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("teacher")
    resolve(str(make_tiny_causal_lm(root / "weights", n_layers=3)), revision=None, trust_remote_code=False).save(root)
    return root


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory, teacher_dir) -> Path:
    """18 train and 4 val sequences of 16 tokens from a local jsonl file."""
    root = tmp_path_factory.mktemp("corpus")
    texts = [f'{{"text": "The quick brown fox number {i} jumps over the lazy dog {i * 7}."}}' for i in range(80)]
    (root / "docs.jsonl").write_text("\n".join(texts) + "\n")
    config = CorpusConfig(source=str(root / "docs.jsonl"), seq_len=16, train_tokens=18 * 16, val_tokens=4 * 16)
    pack_corpus(config, None, teacher_dir, root / "corpus")
    return root / "corpus"
