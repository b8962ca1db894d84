"""The split rule: which examples go to labeled, transfer, val and test (pure; see stages/prepare.py).

Every example gets a rank: sha256 of (seed, id). Ranking by a per-example hash, not a shuffle, means an
example's place never depends on how big its pool is, so a sweep over `data.labeled` leaves `transfer`
(and its cached teacher features) unchanged.
"""

from __future__ import annotations

import hashlib

from stages.core.errors import InputError
from stages.sources.data_config import PrepareConfig


def rank_order(examples: list[dict], seed: int) -> list[dict]:
    """Examples sorted by sha256(seed, id): stable whatever else is in the pool."""
    return sorted(examples, key=lambda example: hashlib.sha256(f"{seed}\x00{example['id']}".encode()).digest())


def assign_splits(splits: dict[str, list[dict]], config: PrepareConfig, seed: int) -> tuple[dict, list[str]]:
    """Canonical examples by dataset role -> the four prepared splits, plus notes on any carving done.

    The last note is always `pool of <n> training examples`."""
    ranked = {role: rank_order(examples, seed) for role, examples in splits.items() if examples}
    has_train = "train" in ranked
    notes: list[str] = []
    if not has_train and "val" in ranked:
        n_val = min(config.val, len(ranked["val"]))
        ranked["val"], ranked["train"] = ranked["val"][:n_val], ranked["val"][n_val:]
        notes.append(f"no training split: val keeps {n_val} examples, the other {len(ranked['train'])} form the pool")
    pool = ranked.get("train", [])
    for role, size in (("test", config.test), ("val", config.val)):
        if role not in ranked:
            ranked[role], pool = pool[:size], pool[size:]
            notes.append(f"no {role} split: {role} = first {len(ranked[role])} examples of the training pool")
    n_wanted = config.labeled + config.transfer
    if n_wanted > len(pool):
        carved = (
            "" if has_train else f" (it has no training split: the pool is what val leaves after data.val={config.val})"
        )
        raise InputError(
            f"data.labeled={config.labeled} + data.transfer={config.transfer} = {n_wanted}, but the training pool "
            f"of {config.dataset} has only {len(pool)} examples{carved}; lower data.labeled or data.transfer"
        )
    prepared = {
        "labeled": pool[: config.labeled],
        "transfer": pool[len(pool) - config.transfer :],
        "val": ranked["val"][: config.val],
        "test": ranked["test"][: config.test],
    }
    for role in ("val", "test"):
        if not prepared[role]:
            raise InputError(f"{config.dataset}: the {role} split is empty (the training pool was too small to carve)")
    return prepared, [*notes, f"pool of {len(pool)} training examples"]
