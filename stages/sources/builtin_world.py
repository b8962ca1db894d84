"""The builtin task: a small world of made-up words in categories, its MC questions and its pretraining text.

The world is `n_categories` real category nouns ("fruit", "tool", ...) with `words_per_category` made-up words
each ("zabo is a fruit."), the categories split into fixed groups of `n_choices`. Questions ask either
"Which of these is a fruit?" (one word from each category of fruit's group) or "What is zabo?" (the category
names of zabo's group). Options always come in the group's canonical category order, so the right SLOT is a
function of recalled knowledge (the category's index within its group), not of in-context matching, which a
tiny model does not learn within a CPU budget (measured: letter accuracy 0.26 and probes at chance with
shuffled options). Everything is a pure function of (task params, seed), the seed being `builtin.seed` (never the
pipeline's `seed`, which only splits the pool): the world from the seed, example i of a split from (seed, split, i).

Two pretraining corpora come from the same world (see `sample_document`): the teacher's holds the facts plus
answered MC questions in the pipeline's own prompt, answered mostly by option NUMBER or option TEXT and only
sometimes by letter, with the letters of "What is <word>?" questions mostly replaced by "A". So the teacher
knows which slot is right (its hidden states at `Answer:` must hold it to predict the number) while its letter
outputs are wrong on part of the questions: Probe-KD's premise in miniature. The student's corpus holds facts
and plain sentences only, never an answered MC question.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from stages.core.config import Section, build
from stages.core.errors import InputError
from stages.sources.prompts import LETTERS, format_prompt

CATEGORIES = (
    "fruit", "tool", "bird", "metal", "dance", "river", "spice", "game",
    "fish", "tree", "star", "song", "cloth", "drink", "stone", "flower",
)  # fmt: skip
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class BuiltinSeedConfig:
    """`builtin.seed`: the builtin world's own seed, apart from the pipeline's `seed`."""

    seed: int = 0
    """Seed of the builtin world (its words), its question pool and the builtin models' pretraining. Kept apart
    from `seed` so that a seed sweep holds the task and the teacher fixed, as a real dataset and teacher are."""

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise InputError(f"params.yaml: builtin.seed={self.seed} must be an integer >= 0")


BUILTIN_SEED = Section("builtin", BuiltinSeedConfig, "builtin data or models; only builtin.seed")


def read_builtin_seed(builtin: dict) -> int:
    """`builtin.seed` from the `builtin` section (whose other keys are sub-sections read elsewhere)."""
    return build(BuiltinSeedConfig, {key: builtin[key] for key in ("seed",) if key in builtin}, "builtin").seed


@dataclass(frozen=True)
class TaskConfig:
    """The `builtin.task` section of params.yaml."""

    n_categories: int = 8
    """Categories in the world (at most 16)."""
    words_per_category: int = 16
    """Made-up words per category."""
    n_choices: int = 4
    """Options per question (2..n_categories)."""
    n_train: int = 4096
    """Pool the labeled and transfer splits are drawn from."""
    n_val: int = 512
    """Validation questions generated (prepare keeps at most data.val of them)."""
    n_test: int = 1024
    """Test questions generated (prepare keeps at most data.test of them)."""

    def __post_init__(self) -> None:
        for name in ("n_categories", "words_per_category", "n_choices", "n_train", "n_val", "n_test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"params.yaml: builtin.task.{name}={value!r} must be a positive integer")
        if not 2 <= self.n_categories <= len(CATEGORIES):
            raise InputError(f"params.yaml: builtin.task.n_categories={self.n_categories} must be 2..{len(CATEGORIES)}")
        if not 2 <= self.n_choices <= self.n_categories:
            raise InputError(
                f"params.yaml: builtin.task.n_choices={self.n_choices}: options come from distinct categories, "
                f"so it must be 2..n_categories ({self.n_categories})"
            )
        if self.n_categories % self.n_choices:
            raise InputError(
                f"params.yaml: builtin.task.n_categories={self.n_categories} must be divisible by "
                f"builtin.task.n_choices={self.n_choices}: questions list the categories of one fixed group"
            )


@dataclass(frozen=True)
class World:
    categories: tuple[str, ...]
    members: tuple[tuple[str, ...], ...]  # members[c] = the made-up words of category c
    n_choices: int

    def group(self, category: int) -> list[int]:
        """The categories of `category`'s group in canonical order; `category` sits at `category % n_choices`."""
        start = category - category % self.n_choices
        return list(range(start, start + self.n_choices))

    @property
    def words(self) -> list[tuple[str, int]]:
        return [(word, c) for c, words in enumerate(self.members) for word in words]


@lru_cache(maxsize=8)
def build_world(config: TaskConfig, seed: int) -> World:
    rng = random.Random(f"builtin-world:{seed}")
    categories = tuple(rng.sample(CATEGORIES, config.n_categories))
    # Each category's words share an ending ("-rok" for fruit, say), a regularity a tiny model picks up in
    # a few hundred steps; without it, memorising 128 arbitrary word -> category facts took far longer than
    # the pretraining budget (measured: fact accuracy 0.22 after 800 steps on 8 categories).
    syllables = [c + v for c in CONSONANTS for v in VOWELS]
    endings = rng.sample([s + c for s in syllables for c in "klmnrstx"], config.n_categories)
    seen: set[str] = set(CATEGORIES)
    members = []
    for ending in endings:
        words: list[str] = []
        while len(words) < config.words_per_category:
            word = "".join(rng.choice(syllables) for _ in range(rng.choice((1, 2)))) + ending
            if word not in seen:
                seen.add(word)
                words.append(word)
        members.append(tuple(words))
    return World(categories, tuple(members), config.n_choices)


def article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def sample_question(world: World, rng: random.Random) -> tuple[str, list[str], int, str]:
    """(question, choices, answer index, subject category): options in the group's canonical order."""
    target = rng.randrange(len(world.categories))
    group = world.group(target)
    if rng.random() < 0.5:
        question = f"Which of these is {article(world.categories[target])} {world.categories[target]}?"
        options = [rng.choice(world.members[c]) for c in group]  # the words vary, so the model must read them
    else:
        word = rng.choice(world.members[target])
        question = f"What is {word}?"
        options = [world.categories[c] for c in group]
    return question, options, group.index(target), world.categories[target]


def dataset_splits(config: TaskConfig, seed: int) -> dict[str, list[dict]]:
    """{train, val, test}: canonical examples; example i of a split depends only on (seed, split, i, world)."""
    world = build_world(config, seed)
    sizes = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    splits: dict[str, list[dict]] = {}
    for split in SPLIT_NAMES:
        examples = []
        for index in range(sizes[split]):
            question, choices, answer, subject = sample_question(world, random.Random(f"{seed}:{split}:{index}"))
            examples.append(
                {
                    "id": f"builtin-{split}-{index:05d}",
                    "question": question,
                    "choices": choices,
                    "answer": answer,
                    "source": "builtin",
                    "subject": subject,
                }
            )
        splits[split] = examples
    return splits


@dataclass(frozen=True)
class CorpusMix:
    """What a role's pretraining documents are made of (fractions of documents / of answers)."""

    mc_fraction: float = 0.0
    """Share of documents that are answered MC questions in the pipeline prompt (0 for the student)."""
    letter_fraction: float = 0.0
    """Share of those answered by letter."""
    text_fraction: float = 0.0
    """Share answered by the option's text; the rest (1 - letter - text) by option number (1..n)."""
    letter_bias: float = 0.0
    """Share of letter answers to "What is <word>?" questions replaced by "A" whatever the right option: the
    teacher's brittle letter habit. Above 0.5 its letters are wrong on those questions (unless the answer is A)
    while the slot stays in its hidden states; "Which of these" letters stay right."""

    def __post_init__(self) -> None:
        for name in ("mc_fraction", "letter_fraction", "text_fraction", "letter_bias"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise InputError(f"params.yaml: builtin.<role>.{name}={value!r} must be a number in [0, 1]")
        if self.letter_fraction + self.text_fraction > 1.0:
            raise InputError(
                "params.yaml: builtin.<role>.letter_fraction + text_fraction must be <= 1 (the rest is numbers)"
            )


def fact_sentence(world: World, rng: random.Random) -> str:
    c = rng.randrange(len(world.categories))
    word, category = rng.choice(world.members[c]), world.categories[c]
    templates = (
        f"{word} is {article(category)} {category}.",
        f"{word} is a kind of {category}.",
        f"One {category} is {word}.",
    )
    if rng.random() < 0.2:  # list sentences tie several members together
        others = rng.sample(world.members[c], 3)
        return f"{others[0]}, {others[1]} and {others[2]} are {category}s."
    return rng.choice(templates)


def answer_text(choices: list[str], answer: int, biased: bool, mix: CorpusMix, rng: random.Random) -> str:
    """The answer after "Answer:": a letter (replaced by "A" at rate letter_bias where `biased`), text or number."""
    draw = rng.random()
    if draw < mix.letter_fraction:
        # A bias on one question form only: a uniform bias either loses to the right letter (< 0.5) or
        # swamps every letter (> 0.5), and in between the measured letter accuracy swung 0.29-0.98 with the seed.
        return "A" if biased and rng.random() < mix.letter_bias else LETTERS[answer]
    if draw < mix.letter_fraction + mix.text_fraction:
        return choices[answer]
    return str(answer + 1)


def sample_document(world: World, mix: CorpusMix, rng: random.Random) -> str:
    """One pretraining document: an answered MC question (share `mc_fraction`) or a few facts."""
    if rng.random() < mix.mc_fraction:
        question, choices, answer, _ = sample_question(world, rng)
        biased = question.startswith("What is")
        return f"{format_prompt(question, choices)} {answer_text(choices, answer, biased, mix, rng)}"
    return " ".join(fact_sentence(world, rng) for _ in range(rng.randint(2, 4)))
