"""Hidden-state stores for tests, written through the real writer (stages/store/writer.py), so tests of the
stages after `extract` read exactly the layout extraction produces."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.store.reader import CLOZE_LOGPROB, CLOZE_NORM
from stages.store.writer import StoreLayout, finalize, fingerprint, open_partial, partial_path, write_shard


def write_store(
    path: Path,
    ids: list[str],
    hidden: np.ndarray,
    option_logits: np.ndarray | None,
    *,
    layers: list[int] | None = None,
    n_teacher_layers: int | None = None,
    shard_examples: int = 64,
    cloze: np.ndarray | None = None,
) -> None:
    """A finished store of `hidden` (n_examples, n_layers, d_model) and, unless None, the option logits and the cloze
    log-likelihoods (n_examples, MAX_CHOICES); the per-character cloze array holds them halved."""
    n_examples, n_layers, d_model = hidden.shape
    layout = StoreLayout(n_examples, n_layers, d_model, shard_examples, "float16", option_logits is not None,
                         cloze is not None)  # fmt: skip
    layers = list(range(n_layers)) if layers is None else layers
    attrs = {
        "example_ids": list(ids),
        "layers": layers,
        "n_teacher_layers": n_teacher_layers or n_layers,
        "teacher": {
            "model": "synthetic",
            "revision": "abc",
            "kind": "causal_lm" if option_logits is not None else "encoder",
        },
        "has_cloze": cloze is not None,
        "cloze_missing": None if cloze is not None else "extract.cloze is false (synthetic store)",
    }
    group, _ = open_partial(partial_path(path), layout, fingerprint(attrs))
    for shard in range(layout.n_shards):
        start, stop = layout.shard_range(shard)
        logits = None if option_logits is None else option_logits[start:stop].astype(np.float32)
        scores = None if cloze is None else {CLOZE_LOGPROB: cloze[start:stop], CLOZE_NORM: cloze[start:stop] / 2}
        write_shard(group, layout, shard, hidden[start:stop].astype(np.float16), logits, scores)
    finalize(partial_path(path), path, attrs)
