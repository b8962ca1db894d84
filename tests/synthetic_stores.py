"""Hidden-state stores for tests, written through the real writer (stages/store/writer.py), so tests of the
stages after `extract` read exactly the layout extraction produces."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.store.reader import CLOZE_LOGPROB, CLOZE_NORM, OPTION_STATES
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
    option_states: np.ndarray | None = None,
) -> None:
    """A finished store of `hidden` (n_examples, n_layers, d_model) and, unless None, the option logits and the cloze
    log-likelihoods (n_examples, MAX_CHOICES); the per-character cloze array holds them halved; the per-option states
    (n_examples, n_layers, n_slots, d_model)."""
    n_examples, n_layers, d_model = hidden.shape
    layout = StoreLayout(n_examples, n_layers, d_model, shard_examples, "float16", option_logits is not None,
                         cloze is not None, 0 if option_states is None else option_states.shape[2])  # fmt: skip
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
        "has_option_states": option_states is not None,
        "option_states_missing": None if option_states is not None else "extract.option_states is false (synthetic)",
    }
    group, _ = open_partial(partial_path(path), layout, fingerprint(attrs))
    for shard in range(layout.n_shards):
        start, stop = layout.shard_range(shard)
        logits = None if option_logits is None else option_logits[start:stop].astype(np.float32)
        extra = {} if cloze is None else {CLOZE_LOGPROB: cloze[start:stop], CLOZE_NORM: cloze[start:stop] / 2}
        if option_states is not None:
            extra[OPTION_STATES] = option_states[start:stop].astype(np.float16)
        write_shard(group, layout, shard, hidden[start:stop].astype(np.float16), logits, extra)
    finalize(partial_path(path), path, attrs)
