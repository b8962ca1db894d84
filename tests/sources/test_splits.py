"""The split rule (stages/sources/splits.py): rank by sha256(seed, id), labeled first, transfer last, carving."""

from __future__ import annotations

import pytest

from stages.core.errors import InputError
from stages.sources.data_config import PrepareConfig
from stages.sources.schema import SPLITS
from stages.sources.splits import assign_splits, rank_order


def pool(n: int, prefix: str = "q") -> list[dict]:
    return [{"id": f"{prefix}{i}", "question": f"Q{i}?", "choices": ["a", "b"], "answer": i % 2} for i in range(n)]


def ids(rows: list[dict]) -> list[str]:
    return [row["id"] for row in rows]


def test_rank_order_does_not_depend_on_pool_size():
    small, large = rank_order(pool(50), seed=3), rank_order(pool(500), seed=3)
    small_ids = set(ids(small))
    assert [i for i in ids(large) if i in small_ids] == ids(small)
    assert ids(rank_order(pool(50), seed=4)) != ids(small)


def test_labeled_first_transfer_last_disjoint_and_stable_under_labeled_sweeps():
    splits = {"train": pool(100), "val": pool(30, "v"), "test": pool(40, "t")}
    results = {n: assign_splits(splits, PrepareConfig(labeled=n, transfer=20, val=10, test=15), 0)[0] for n in (5, 40)}
    for n, prepared in results.items():
        assert len(prepared["labeled"]) == n and len(prepared["transfer"]) == 20
        assert not set(ids(prepared["labeled"])) & set(ids(prepared["transfer"]))
        assert (len(prepared["val"]), len(prepared["test"])) == (10, 15)
    assert ids(results[5]["transfer"]) == ids(results[40]["transfer"])
    assert ids(results[40]["labeled"])[:5] == ids(results[5]["labeled"])  # more budget only adds examples


def test_too_many_labeled_and_transfer_names_params_and_pool_size():
    config = PrepareConfig(dataset="arc_easy", labeled=60, transfer=50, val=5, test=5)
    with pytest.raises(InputError, match=r"data.labeled=60 \+ data.transfer=50 = 110, but the training pool of "
                       r"arc_easy has only 100 examples"):  # fmt: skip
        assign_splits({"train": pool(100), "val": pool(5, "v"), "test": pool(5, "t")}, config, 0)


def test_no_training_split_carves_the_pool_from_val():
    config = PrepareConfig(labeled=3, transfer=4, val=5, test=10)
    prepared, notes = assign_splits({"val": pool(20, "v"), "test": pool(6, "t")}, config, 0)
    assert len(prepared["val"]) == 5 and len(prepared["test"]) == 6
    assert not set(ids(prepared["val"])) & set(ids(prepared["labeled"]) + ids(prepared["transfer"]))
    assert notes[0] == "no training split: val keeps 5 examples, the other 15 form the pool"


def test_single_pool_carves_test_then_val():
    prepared, notes = assign_splits({"train": pool(30)}, PrepareConfig(labeled=4, transfer=6, val=5, test=7), 1)
    every = [i for name in SPLITS for i in ids(prepared[name])]
    assert len(every) == len(set(every)) == 4 + 6 + 5 + 7
    assert "no test split: test = first 7 examples of the training pool" in notes
