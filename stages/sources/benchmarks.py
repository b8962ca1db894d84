"""Readers for the benchmarks in their original published formats, and the same datasets from the hub.

- ARC (AI2 release JSONL): labels are letters or digits and a row has 3 to 5 choices, so `answerKey` maps to
  the position of the matching label, never `ord(key) - 65`.
- MMLU (headerless per-subject CSVs in `dev/ val/ test/`; quoted cells may hold newlines; CRLF line ends):
  subject from the file name; ids `<subject>_<split>-<k>`.
- AQuA-RAT (JSON lines, options `"A)12"`, sometimes with a doubled prefix): ids `<file stem>-<k>`.
The hub readers build the same ids, so a hub run and a local copy agree.
"""

from __future__ import annotations

import csv
import functools
import logging
import re
from pathlib import Path

from stages.core.errors import InputError
from stages.sources.prompts import LETTERS
from stages.sources.rows import ROLE_ALIASES, LoadedDataset, RowCollector, json_lines

BENCHMARKS = ("arc_easy", "arc_challenge", "mmlu", "aqua_rat")
HUB_IDS = {
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge"),
    "mmlu": ("cais/mmlu", "all"),
    "aqua_rat": ("deepmind/aqua_rat", "raw"),
}
log = logging.getLogger(__name__)

AQUA_PREFIX = re.compile(r"^[A-E]\)\s*")


def read_local(dataset: str, folder: Path, on_invalid: str) -> LoadedDataset:
    """A local copy of `dataset` in its original published format."""
    readers = {"arc_easy": read_arc, "arc_challenge": read_arc, "mmlu": read_mmlu, "aqua_rat": read_aqua}
    collector = RowCollector(on_invalid, str(folder))
    readers[dataset](dataset, folder, collector)
    return collector.finish()


def arc_example(record: dict) -> dict:
    labels = [str(choice["label"]).strip() for choice in record["question"]["choices"]]
    key = str(record["answerKey"]).strip()
    if len(set(labels)) != len(labels):
        raise ValueError(f"repeated choice labels {labels}")
    if key not in labels:
        raise ValueError(f"answerKey {key!r} is not one of the choice labels {labels}")
    example_id = record["id"]
    return {
        "id": example_id,
        "question": record["question"]["stem"],
        "choices": [choice["text"] for choice in record["question"]["choices"]],
        "answer": labels.index(key),  # position of the label: labels may be digits ("1".."4")
        "source": example_id.split("_")[0] if isinstance(example_id, str) and "_" in example_id else None,
        "subject": None,
    }


def mmlu_example(cells: list[str], example_id: str, subject: str) -> dict:
    if len(cells) < 2:
        raise ValueError(f"{len(cells)} column(s); expected question, options..., answer letter")
    *texts, letter = [cell.replace("\r\n", "\n") for cell in cells]  # CRLF inside quoted cells
    question, choices = texts[0], texts[1:]
    letter = letter.strip()
    if letter not in LETTERS[: len(choices)] or not letter:
        raise ValueError(f"answer {letter!r} is not one of the option letters {LETTERS[: len(choices)]}")
    return {
        "id": example_id,
        "question": question,
        "choices": choices,
        "answer": LETTERS.index(letter),
        "source": None,
        "subject": subject,
    }


def aqua_example(record: dict, example_id: str) -> dict:
    options = record["options"]
    if not isinstance(options, list):
        raise ValueError(f"options must be a list (got {type(options).__name__})")
    correct = str(record["correct"]).strip()
    if len(correct) != 1 or correct not in LETTERS:
        raise ValueError(f"correct {correct!r} is not an option letter")
    return {
        "id": example_id,
        "question": record["question"],
        "choices": [strip_aqua_prefix(option, letter) for option, letter in zip(options, LETTERS, strict=False)],
        "answer": LETTERS.index(correct),  # options are positional: "A)..." is always first
        "source": None,
        "subject": None,
    }


def strip_aqua_prefix(option: str, letter: str) -> str:
    """`"A)12"` -> `"12"`. The positional prefix is stripped as often as it repeats: test.json line 30 reads
    `"A)A)59"`. An option with another letter's prefix loses that one prefix (`^[A-E]\\)\\s*`)."""
    stripped = re.sub(rf"^(?:{letter}\)\s*)+", "", option)
    return stripped if stripped != option else AQUA_PREFIX.sub("", option, count=1)


# ---------------------------------------------------------------- local copies in their original formats


def read_arc(dataset: str, folder: Path, collector: RowCollector) -> None:
    name = HUB_IDS[dataset][1]
    base = folder / name if (folder / name).is_dir() else folder
    for part, role in (("Train", "train"), ("Dev", "val"), ("Test", "test")):
        file = base / f"{name}-{part}.jsonl"
        if not file.exists():
            raise InputError(f"{file}: file not found (data.path must hold {name}-{{Train,Dev,Test}}.jsonl)")
        for line_no, record in json_lines(file, collector):
            collector.add(role, str(file), f"{file} line {line_no}", functools.partial(arc_example, record))


def read_mmlu(dataset: str, folder: Path, collector: RowCollector) -> None:
    for split in ("dev", "val", "test"):
        subfolder = folder / split
        files = sorted(subfolder.glob("*.csv"))
        if not files:
            raise InputError(f"{subfolder}: no CSV files (data.path must hold MMLU's dev/ val/ test/ folders)")
        for file in files:
            if not file.stem.endswith(f"_{split}"):
                raise InputError(f"{file}: expected a name like abstract_algebra_{split}.csv in {split}/")
            subject = file.stem[: -len(split) - 1]
            read_mmlu_file(file, subject, split, collector)


def read_mmlu_file(file: Path, subject: str, split: str, collector: RowCollector) -> None:
    role = "test" if split == "test" else "val"  # MMLU has no training split; prepare carves the pool
    with file.open(encoding="utf-8", newline="") as handle:  # newline="": quoted cells keep their newlines
        reader = csv.reader(handle)
        start, index = 1, 0
        try:
            for cells in reader:
                where = f"{file} line {start}"  # a record may span lines: report the first
                start = reader.line_num + 1
                if not cells:
                    continue
                example_id = f"{subject}_{split}-{index}"
                index += 1
                collector.add(role, str(file), where, functools.partial(mmlu_example, cells, example_id, subject))
        except csv.Error as error:
            collector.reject(str(file), f"{file} line {start}", f"unparsable CSV ({error})")


def read_aqua(dataset: str, folder: Path, collector: RowCollector) -> None:
    for stem, role in (("train", "train"), ("dev", "val"), ("test", "test")):
        file = folder / f"{stem}.json"
        if not file.exists():
            if stem == "train":
                log.warning("%s: not found; aqua_rat has no training split here, prepare carves one", file)
                continue
            raise InputError(f"{file}: file not found (data.path must hold AQuA-RAT's dev.json and test.json)")
        for line_no, record in json_lines(file, collector):
            example_id = f"{stem}-{line_no - 1}"  # the row index, as the hub numbers it
            collector.add(
                role, str(file), f"{file} line {line_no}", functools.partial(aqua_example, record, example_id)
            )


# ---------------------------------------------------------------- the Hugging Face hub (needs network)


def load_from_hub(dataset: str, on_invalid: str) -> LoadedDataset:
    import datasets

    hub_id, config = HUB_IDS[dataset]
    origin = f"{hub_id}:{config}"
    log.info("loading %s from the Hugging Face hub", origin)
    try:
        loaded = datasets.load_dataset(hub_id, config)
    except Exception as error:  # offline (ConnectionError), rate-limited, moved: one line naming the way round
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(
            f"data.dataset={dataset}: could not load {origin} from the Hugging Face hub ({type(error).__name__}: "
            f"{first[:200]}); offline, download it once and point data.path at the local copy under data/raw/"
        ) from error
    collector = RowCollector(on_invalid, origin)
    for split, rows in loaded.items():
        role = ROLE_ALIASES.get(split)
        if role is None:  # e.g. MMLU's auxiliary_train: other datasets' questions
            log.info("%s: ignoring split %s", origin, split)
            continue
        file = f"{origin}[{split}]"
        per_subject: dict[str, int] = {}
        for index, row in enumerate(rows):
            where = f"{file} row {index}"
            if dataset == "mmlu":
                subject, stem_split = row["subject"], {"validation": "val"}.get(split, split)
                k = per_subject[subject] = per_subject.get(subject, -1) + 1
                collector.add(role, file, where, functools.partial(hub_mmlu, row, f"{subject}_{stem_split}-{k}"))
            elif dataset == "aqua_rat":
                example_id = f"{'dev' if split == 'validation' else split}-{index}"
                collector.add(role, file, where, functools.partial(aqua_example, row, example_id))
            else:
                collector.add(role, file, where, functools.partial(hub_arc_example, row))
    return collector.finish()


def hub_arc_example(row: dict) -> dict:
    return arc_example(hub_arc_record(row))


def hub_arc_record(row: dict) -> dict:
    """The hub's flattened ARC row, in the release's nested form."""
    choices = [
        {"text": t, "label": label} for t, label in zip(row["choices"]["text"], row["choices"]["label"], strict=True)
    ]
    return {"id": row["id"], "question": {"stem": row["question"], "choices": choices}, "answerKey": row["answerKey"]}


def hub_mmlu(row: dict, example_id: str) -> dict:
    choices = list(row["choices"])
    return {
        "id": example_id,
        "question": row["question"],
        "choices": choices,
        "answer": int(row["answer"]),
        "source": None,
        "subject": row["subject"],
    }


# ---------------------------------------------------------------- files already in the canonical schema
