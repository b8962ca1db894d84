import random

import pytest

from stages.builtin_world import CorpusMix, TaskConfig, build_world, dataset_splits, sample_document
from stages.errors import InputError
from stages.prompts import LETTERS

TASK = {"n_categories": 8, "words_per_category": 16, "n_choices": 4, "n_train": 200, "n_val": 50, "n_test": 60}


def test_splits_are_canonical_and_sized():
    splits = dataset_splits(TASK, seed=0)
    assert {name: len(rows) for name, rows in splits.items()} == {"train": 200, "val": 50, "test": 60}
    ids = [row["id"] for rows in splits.values() for row in rows]
    assert len(set(ids)) == len(ids)
    world = build_world(TaskConfig.from_params(TASK), 0)
    category_of = {word: c for word, c in world.words}
    for row in splits["train"]:
        assert set(row) == {"id", "question", "choices", "answer", "source", "subject"}
        assert row["source"] == "builtin" and len(row["choices"]) == 4 and 0 <= row["answer"] < 4
        assert len(set(row["choices"])) == 4
        right = row["choices"][row["answer"]]
        if row["question"].startswith("Which"):  # the right word is the only member of the asked category
            members = [category_of[w] == world.categories.index(row["subject"]) for w in row["choices"]]
            assert members.count(True) == 1 and category_of[right] == world.categories.index(row["subject"])
        else:
            assert right == row["subject"]
    answers = [row["answer"] for row in splits["train"]]
    assert all(answers.count(k) > 20 for k in range(4))  # answer positions are shuffled


def test_splits_deterministic_and_stable_under_pool_size():
    first, again = dataset_splits(TASK, 0), dataset_splits(TASK, 0)
    assert first == again
    bigger = dataset_splits({**TASK, "n_train": 300, "n_val": 70}, 0)
    assert bigger["train"][:200] == first["train"] and bigger["val"][:50] == first["val"]
    assert dataset_splits(TASK, 1)["val"] != first["val"]


def test_documents_follow_the_mix():
    world = build_world(TaskConfig.from_params(TASK), 0)
    rng = random.Random(0)
    student = [sample_document(world, CorpusMix(), rng) for _ in range(200)]
    assert not any("Answer:" in doc for doc in student)
    teacher = [
        sample_document(world, CorpusMix(mc_fraction=1.0, letter_fraction=1.0, letter_bias=1.0), rng) for _ in range(50)
    ]
    assert all(doc.endswith("\nAnswer: A") for doc in teacher)  # letter_bias 1: always "A"
    numbers = [sample_document(world, CorpusMix(1.0, 0.0, 0.0), rng).rsplit(" ", 1)[1] for _ in range(200)]
    assert {"1", "2", "3", "4"} <= set(numbers) and not set(numbers) & set(LETTERS)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"n_choices": 9}, "n_choices=9"), ({"n_categories": 40}, "n_categories"), ({"n_val": 0}, "n_val"),
     ({"colour": 1}, "unknown key")],
)  # fmt: skip
def test_bad_task_params(change, message):
    with pytest.raises(InputError, match=message):
        dataset_splits({**TASK, **change}, 0)
