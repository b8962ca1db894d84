"""`corpus`: documents from a source, tokenised with the teacher's tokenizer, packed into fixed-length sequences.

One packing rule for every source: documents come in a seeded order; each is encoded (no special tokens) and
followed by the EOS token; the validation sequences are filled first, then the training ones, so the held-out
documents never enter training, and the corpus is a pure function of (source, tokenizer, seed). `packing: concat`
cuts the stream of documents into `seq_len`-token sequences (a document crossing a cut continues in the next
sequence); `packing: document` puts one document in each sequence (cut at `seq_len` if longer) and pads it with
EOS: its `lengths` mark where the padding starts.

Written to `data/pretrain/corpus/`: `train.npy` and `val.npy`, (n_sequences, seq_len) int32 token ids,
`train_lengths.npy` and `val_lengths.npy`, (n_sequences,) int32 real tokens per sequence (seq_len everywhere under
concat), and `corpus.json` describing them (source, tokenizer, counts, seed), renamed into place together.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.atomic import atomic_path
from stages.core.errors import InputError
from stages.pretraining.config import CorpusConfig
from stages.sources.builtin_world import CorpusMix, TaskConfig, build_world, sample_document

log = logging.getLogger(__name__)
TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")
DESCRIPTION = "corpus.json"


def builtin_documents(task: TaskConfig, world_seed: int, mix: CorpusMix, seed: int) -> Iterator[str]:
    """The builtin teacher's corpus (same world and mix as `models@teacher`), an endless seeded stream."""
    world = build_world(task, world_seed)
    rng = random.Random(f"pretrain-corpus:{world_seed}:{seed}")  # apart from the teacher's own pretraining draws
    while True:
        yield sample_document(world, mix, rng)


def local_files(path: Path) -> list[Path]:
    if not path.exists():
        raise InputError(f"pretrain.corpus.source={path}: no such file or folder (put local text under data/raw/)")
    files = sorted(p for p in (path.rglob("*") if path.is_dir() else [path]) if p.suffix in TEXT_SUFFIXES)
    if not files:
        raise InputError(f"pretrain.corpus.source={path}: no {', '.join(TEXT_SUFFIXES)} files there")
    return files


def file_documents(file: Path, text_field: str) -> list[str]:
    """The documents of one local file: blank-line blocks of a .txt, the `text_field` of jsonl/parquet rows."""
    if file.suffix == ".txt":
        return [block.strip() for block in file.read_text(encoding="utf-8").split("\n\n") if block.strip()]
    if file.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise InputError(f"{file}:{number}: not a JSON line ({error.msg})") from None
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(file).to_pylist()
    texts = []
    for number, row in enumerate(rows, 1):
        text = row.get(text_field) if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise InputError(f"{file}: row {number} has no text field {text_field!r} (pretrain.corpus.text_field)")
        texts.append(text)
    return texts


def local_documents(path: Path, text_field: str, seed: int) -> Iterator[str]:
    documents = [text for file in local_files(path) for text in file_documents(file, text_field)]
    random.Random(f"pretrain-corpus:{seed}").shuffle(documents)
    yield from documents


def hub_documents(config: CorpusConfig) -> Iterator[str]:
    """A hub dataset's train split through `datasets` streaming, shuffled in a buffer: never downloaded whole."""
    try:
        from datasets import load_dataset
    except ImportError as error:
        raise InputError("pretrain.corpus.source=hub:... needs `pip install datasets`") from error
    name = config.source.removeprefix("hub:")
    stream = load_dataset(name, config.hub_config, split="train", streaming=True)
    stream = stream.shuffle(seed=config.seed, buffer_size=config.shuffle_buffer)
    for row in stream:
        text = row.get(config.text_field)
        if not isinstance(text, str):
            raise InputError(f"hub dataset {name} has no text field {config.text_field!r} (pretrain.corpus.text_field)")
        yield text


def documents(config: CorpusConfig, builtin: tuple[TaskConfig, int, CorpusMix] | None) -> Iterator[str]:
    if config.source == "builtin":
        assert builtin is not None  # the stage reads builtin.* whenever the source is builtin
        return builtin_documents(*builtin, config.seed)
    if config.source.startswith("hub:"):
        return hub_documents(config)
    return local_documents(Path(config.source), config.text_field, config.seed)


def pack(
    texts: Iterator[str], tokenizer: Any, seq_len: int, counts: tuple[int, int], packing: str = "concat"
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """((ids, lengths) of val, (ids, lengths) of train): (counts[i], seq_len) int32 ids and (counts[i],) int32 real
    tokens per sequence, filled in that order from `texts`."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError("the teacher's tokenizer has no EOS token to separate packed documents")
    documents = (np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"] + [eos], np.int64) for text in texts)

    def first() -> np.ndarray:
        document = next(documents, None)
        if document is None:
            raise InputError(
                f"the corpus ran out of documents; it needs {sum(counts) * seq_len} tokens (lower "
                "pretrain.corpus.train_tokens or val_tokens, or add text)"
            )
        return document

    splits = []
    for n_sequences in counts:
        ids = np.full((n_sequences, seq_len), eos, dtype=np.int32)
        lengths = np.full(n_sequences, seq_len, dtype=np.int32)
        if packing == "concat":
            stream, have = [], 0
            while have < n_sequences * seq_len:
                stream.append(first())
                have += len(stream[-1])
            ids[:] = np.concatenate(stream)[: n_sequences * seq_len].reshape(n_sequences, seq_len)
        else:
            for row in range(n_sequences):
                document = first()[:seq_len]  # a longer document is cut
                ids[row, : len(document)], lengths[row] = document, len(document)
        splits.append((ids, lengths))
    return tuple(splits)


def write_corpus(
    out: Path,
    train: np.ndarray,
    val: np.ndarray,
    description: dict[str, Any],
    lengths: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """The corpus folder, renamed into place whole; `lengths` (train, val) default to full sequences."""
    if lengths is None:
        lengths = (np.full(len(train), train.shape[1], np.int32), np.full(len(val), val.shape[1], np.int32))
    with atomic_path(out, directory=True) as folder:
        np.save(folder / "train.npy", train)
        np.save(folder / "val.npy", val)
        np.save(folder / "train_lengths.npy", lengths[0])
        np.save(folder / "val_lengths.npy", lengths[1])
        (folder / DESCRIPTION).write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")


def run(config: CorpusConfig, builtin: tuple[TaskConfig, int, CorpusMix] | None, teacher_dir: Path, out: Path) -> dict:
    """Pack the corpus for the teacher in `teacher_dir` and write `out`; returns its description."""
    from stages.modeling.loading import ModelRef, load_tokenizer

    ref = ModelRef.read(teacher_dir)
    tokenizer = load_tokenizer(ref, teacher_dir)
    n_train, n_val = config.train_tokens // config.seq_len, config.val_tokens // config.seq_len
    (val, val_lengths), (train, train_lengths) = pack(
        documents(config, builtin), tokenizer, config.seq_len, (n_val, n_train), config.packing
    )
    vocabulary = len(tokenizer)
    description = {
        "config": asdict(config),
        "teacher": {"source": ref.source, "revision": ref.revision},
        "vocab_size": vocabulary,
        "eos_token_id": tokenizer.eos_token_id,
        "n_train": n_train,
        "n_val": n_val,
        "seq_len": config.seq_len,
        "train_tokens": int(train_lengths.sum()),
        "val_tokens": int(val_lengths.sum()),
    }
    if train.size and int(train.max()) >= vocabulary:
        raise InputError(f"token id {int(train.max())} is outside the teacher's vocabulary of {vocabulary}")
    write_corpus(out, train, val, description, (train_lengths, val_lengths))
    log.info("corpus: %d train and %d val sequences of %d tokens", n_train, n_val, config.seq_len)
    return description


def read_corpus(folder: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(train, val, description) of a corpus folder written by `write_corpus`."""
    if not (folder / DESCRIPTION).exists():
        raise InputError(f"{folder}: corpus not found (run `dvc repro corpus` first)")
    description = json.loads((folder / DESCRIPTION).read_text())
    return np.load(folder / "train.npy"), np.load(folder / "val.npy"), description


def read_lengths(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) real tokens per sequence: positions from there on are padding."""
    return np.load(folder / "train_lengths.npy"), np.load(folder / "val_lengths.npy")
