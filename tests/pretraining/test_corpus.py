"""corpus: packing is deterministic from the seed, validation documents never reach training, every local format
reads, and bad sources stop with one clear message."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stages.core.errors import InputError
from stages.modeling.loading import ModelRef, load_tokenizer
from stages.pretraining.config import CorpusConfig
from stages.pretraining.corpus import builtin_documents, pack, read_corpus, run
from stages.sources.builtin_world import CorpusMix, TaskConfig


@pytest.fixture(scope="module")
def tokenizer(teacher_dir):
    return load_tokenizer(ModelRef.read(teacher_dir), teacher_dir)


def test_packing_joins_documents_with_eos_and_cuts_whole_sequences(tokenizer):
    texts = iter(["apple stone", "river", "fox dog sky", "brown cloud", "apple"] * 10)
    (val, val_lengths), (train, _) = pack(texts, tokenizer, 4, (1, 3))
    assert val.shape == (1, 4) and train.shape == (3, 4) and train.dtype == np.int32 and val_lengths.tolist() == [4]
    first = tokenizer("apple stone", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert val.ravel().tolist()[: min(4, len(first))] == first[:4]
    assert tokenizer.eos_token_id in np.concatenate([val.ravel(), train.ravel()])


def test_validation_documents_are_not_in_training(tokenizer):
    """Documents are distinct numbers; the val stream's documents never appear among the training ones."""
    texts = [f"document {i} ends here" for i in range(200)]
    (val, _), (train, _) = pack(iter(texts), tokenizer, 8, (5, 20))
    decode = lambda rows: tokenizer.decode(rows.ravel().tolist())  # noqa: E731
    val_docs = {d.strip() for d in decode(val).split(tokenizer.eos_token) if d.strip()}
    train_docs = {d.strip() for d in decode(train).split(tokenizer.eos_token)[1:-1] if d.strip()}
    assert val_docs and train_docs and not val_docs & train_docs


@pytest.mark.parametrize("packing", ["document", "concat"])
def test_document_packing_starts_every_sequence_at_a_document(tokenizer, packing):
    texts = [f"doc {i} " + "word " * (i % 5) for i in range(100)]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    (val, val_lengths), (train, lengths) = pack(iter(texts), tokenizer, 12, (3, 6), packing)
    if packing == "concat":
        assert (lengths == 12).all()
        return
    for ids, length, document in zip(train, lengths, encoded[3:], strict=False):  # val took the first 3 documents
        assert 0 < length <= 12 and ids[:length].tolist() == document[:12]
        assert (ids[length:] == tokenizer.eos_token_id).all()
    decode = lambda rows, n: {tokenizer.decode(r[:k].tolist()) for r, k in zip(rows, n, strict=True)}  # noqa: E731
    assert not {d for t in decode(val, val_lengths) for d in t.split(tokenizer.eos_token) if d} & {
        d for t in decode(train, lengths) for d in t.split(tokenizer.eos_token) if d
    }  # held-out documents never reach training


def test_builtin_corpus_is_deterministic_from_its_seed():
    task, mix = TaskConfig(), CorpusMix(0.5, 0.3, 0.25, 0.7)
    first = [next(builtin_documents(task, 0, mix, 0)) for _ in range(1)]
    stream = builtin_documents(task, 0, mix, 0)
    assert [next(stream) for _ in range(5)][:1] == first
    other = builtin_documents(task, 0, mix, 1)
    assert [next(other) for _ in range(5)] != [next(builtin_documents(task, 0, mix, 0)) for _ in range(5)]


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".parquet"])
def test_every_local_format_packs_the_same_corpus(tmp_path, teacher_dir, suffix):
    texts = [f"line {i}: the quick brown fox" for i in range(60)]
    path = tmp_path / f"docs{suffix}"
    if suffix == ".txt":
        path.write_text("\n\n".join(texts))
    elif suffix == ".jsonl":
        path.write_text("\n".join(json.dumps({"body": t}) for t in texts))
    else:
        pq.write_table(pa.table({"body": texts}), path)
    config = CorpusConfig(source=str(path), text_field="body", seq_len=8, train_tokens=64, val_tokens=16, seed=3)
    description = run(config, None, teacher_dir, tmp_path / "out")
    train, val, stored = read_corpus(tmp_path / "out")
    assert train.shape == (8, 8) and val.shape == (2, 8) and stored == description
    again = tmp_path / "again.jsonl"
    again.write_text("\n".join(json.dumps({"body": t}) for t in texts))
    same = CorpusConfig(source=str(again), text_field="body", seq_len=8, train_tokens=64, val_tokens=16, seed=3)
    run(same, None, teacher_dir, tmp_path / "again")
    assert np.array_equal(read_corpus(tmp_path / "again")[0], train)  # same documents, same seed: same packing


def test_bad_sources_are_refused(tmp_path, teacher_dir):
    with pytest.raises(InputError, match="no such file or folder"):
        run(CorpusConfig(source=str(tmp_path / "missing")), None, teacher_dir, tmp_path / "out")
    (tmp_path / "rows.jsonl").write_text('{"content": "hello"}\n')
    with pytest.raises(InputError, match="row 1 has no text field 'text'"):
        run(CorpusConfig(source=str(tmp_path / "rows.jsonl")), None, teacher_dir, tmp_path / "out")
    (tmp_path / "short.jsonl").write_text('{"text": "hello"}\n')
    with pytest.raises(InputError, match="ran out of documents"):
        run(CorpusConfig(source=str(tmp_path / "short.jsonl")), None, teacher_dir, tmp_path / "out")
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(InputError, match="broken.jsonl:1: not a JSON line"):
        run(CorpusConfig(source=str(tmp_path / "broken.jsonl")), None, teacher_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_config_errors_name_the_parameter():
    with pytest.raises(InputError, match="pretrain.corpus.train_tokens=10 must be >= seq_len=64"):
        CorpusConfig(train_tokens=10)
    with pytest.raises(InputError, match="pretrain.corpus.source is empty"):
        CorpusConfig(source=" ")
