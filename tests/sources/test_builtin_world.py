import random

import pytest

from stages.core.config import build
from stages.core.errors import InputError
from stages.sources.builtin_world import CorpusMix, TaskConfig, build_world, dataset_splits, sample_document
from stages.sources.prompts import LETTERS

TASK = {"n_categories": 8, "words_per_category": 16, "n_choices": 4, "n_train": 200, "n_val": 50, "n_test": 60}
CONFIG = TaskConfig(**TASK)


def test_splits_are_canonical_and_sized():
    splits = dataset_splits(CONFIG, seed=0)
    assert {name: len(rows) for name, rows in splits.items()} == {"train": 200, "val": 50, "test": 60}
    ids = [row["id"] for rows in splits.values() for row in rows]
    assert len(set(ids)) == len(ids)
    world = build_world(CONFIG, 0)
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
    assert all(answers.count(k) > 20 for k in range(4))  # every slot is the answer for some categories


def test_options_list_one_fixed_group_so_the_slot_follows_from_the_question():
    splits = dataset_splits(CONFIG, seed=0)
    world = build_world(CONFIG, 0)
    category_of = {word: c for word, c in world.words}
    slot_of_subject: dict[str, set[int]] = {}
    for row in splits["train"]:
        target = world.categories.index(row["subject"])
        if row["question"].startswith("Which"):
            categories = [category_of[word] for word in row["choices"]]
        else:
            categories = [world.categories.index(name) for name in row["choices"]]
        assert categories == world.group(target) and categories[row["answer"]] == target
        slot_of_subject.setdefault(row["subject"], set()).add(row["answer"])
    assert all(len(slots) == 1 for slots in slot_of_subject.values()) and len(slot_of_subject) == 8
    which = [tuple(row["choices"]) for row in splits["train"] if row["question"].startswith("Which")]
    assert len(set(which)) > len(which) // 2  # the words in the options vary, so the model must read them


def test_splits_deterministic_and_stable_under_pool_size():
    first, again = dataset_splits(CONFIG, 0), dataset_splits(CONFIG, 0)
    assert first == again
    bigger = dataset_splits(TaskConfig(**{**TASK, "n_train": 300, "n_val": 70}), 0)
    assert bigger["train"][:200] == first["train"] and bigger["val"][:50] == first["val"]
    assert dataset_splits(CONFIG, 1)["val"] != first["val"]


def test_documents_follow_the_mix():
    world = build_world(CONFIG, 0)
    rng = random.Random(0)
    student = [sample_document(world, CorpusMix(), rng) for _ in range(200)]
    assert not any("Answer:" in doc for doc in student)
    teacher = [
        sample_document(world, CorpusMix(mc_fraction=1.0, letter_fraction=1.0, letter_bias=1.0), rng) for _ in range(80)
    ]
    recall = [doc for doc in teacher if "What is " in doc]
    assert recall and all(doc.endswith("\nAnswer: A") for doc in recall)  # letter_bias 1: always "A" there
    which = [doc.rsplit(" ", 1)[1] for doc in teacher if "Which of these" in doc]
    assert len(set(which)) == 4  # "Which of these" letters stay right, so all slots appear
    numbers = [sample_document(world, CorpusMix(1.0, 0.0, 0.0), rng).rsplit(" ", 1)[1] for _ in range(200)]
    assert {"1", "2", "3", "4"} <= set(numbers) and not set(numbers) & set(LETTERS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_choices": 9}, r"^params\.yaml: builtin\.task\.n_choices=9: options come from distinct categories"),
        ({"n_categories": 40}, r"^params\.yaml: builtin\.task\.n_categories=40 must be 2\.\.16$"),
        ({"n_val": 0}, r"^params\.yaml: builtin\.task\.n_val=0 must be a positive integer$"),
        ({"n_train": "many"}, r"^params\.yaml: builtin\.task\.n_train='many' must be an integer$"),
        ({"colour": 1}, r"^params\.yaml: builtin\.task\.colour is not a parameter; builtin\.task has: n_categories"),
        (
            {"n_choices": 3},
            r"^params\.yaml: builtin\.task\.n_categories=8 must be divisible by builtin\.task\.n_choices=3",
        ),
    ],
)
def test_bad_task_params(change, message):
    with pytest.raises(InputError, match=message):
        build(TaskConfig, {**TASK, **change}, "builtin.task")


def test_task_config_from_params_mapping():
    assert build(TaskConfig, TASK, "builtin.task") == CONFIG
    missing = {key: value for key, value in TASK.items() if key != "n_test"}
    with pytest.raises(InputError, match=r"^params\.yaml: builtin\.task\.n_test is missing \(Test questions generated"):
        build(TaskConfig, missing, "builtin.task")
