"""Dataset adapters: every supported source becomes canonical examples grouped by the dataset's own splits.

`load_dataset_splits(dataset, path, on_invalid, ...)` returns a `LoadedDataset` whose `splits` maps the roles
`train` / `val` / `test` to canonical example dicts (see `stages.schema`), in source order. A role the source
lacks is simply absent; `stages.prepare` decides how to carve it (and logs that it did).

Sources (`data.dataset`):
- `builtin`: `stages.builtin_world.dataset_splits(builtin.task, seed)`.
- `arc_easy`, `arc_challenge`: hub `allenai/ai2_arc`, or `data.path` = a folder holding the AI2 release files
  `ARC-Easy-{Train,Dev,Test}.jsonl` (directly or in an `ARC-Easy/` subfolder). Labels are letters or digits and
  a row has 3 to 5 choices, so `answerKey` maps to the position of the matching label, never `ord(key) - 65`.
- `mmlu`: hub `cais/mmlu` (`all`), or `data.path` = the original release folder with `dev/ val/ test/` of
  headerless per-subject CSVs (`abstract_algebra_test.csv`: question, options..., answer letter; quoted cells
  may hold newlines; CRLF line ends). Subject comes from the file name. MMLU has no training split: dev and val
  are both returned as `val` (the auxiliary_train set is other datasets' questions and is not used).
- `aqua_rat`: hub `deepmind/aqua_rat` (`raw`), or `data.path` = a folder with the original JSON-lines files
  `train.json` (optional: the public copy often lacks it), `dev.json`, `test.json`; options read `"A)12"`.
- anything else: a path to a file or folder already in the canonical schema: `.jsonl`, `.json` (array or JSON
  lines), `.csv` (header; `choices` a JSON list), `.parquet`, or a `datasets.save_to_disk` folder. An optional
  `split` column (train / val / validation / dev / test) assigns rows to roles; without it every row is `train`.

Ids: ARC keeps its own; MMLU rows get `<subject>_<split>-<k>` (k-th row of that subject's file); AQuA rows
get `<file stem>-<k>` (hub `validation` is the release's `dev`), so the hub and a local copy agree.
Bad rows raise InputError naming file and line (`data.on_invalid: error`) or are dropped and counted per file
(`skip`; the counts are logged and returned in `skipped`).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.errors import InputError
from stages.prompts import LETTERS
from stages.schema import example_problem

log = logging.getLogger(__name__)

ROLES = ("train", "val", "test")
BENCHMARKS = ("arc_easy", "arc_challenge", "mmlu", "aqua_rat")
ROLE_ALIASES = {"train": "train", "val": "val", "validation": "val", "dev": "val", "test": "test"}
HUB_IDS = {
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge"),
    "mmlu": ("cais/mmlu", "all"),
    "aqua_rat": ("deepmind/aqua_rat", "raw"),
}
AQUA_PREFIX = re.compile(r"^[A-E]\)\s*")


@dataclass
class LoadedDataset:
    splits: dict[str, list[dict]]  # role -> canonical examples, in source order
    origin: str  # local path or hub id the rows came from (recorded in the parquet metadata)
    skipped: dict[str, int] = field(default_factory=dict)  # file -> rows dropped under on_invalid=skip


class RowCollector:
    """Validates rows as adapters read them; ids must be unique across the whole dataset."""

    def __init__(self, on_invalid: str, origin: str) -> None:
        self.on_invalid = on_invalid
        self.origin = origin
        self.splits: dict[str, list[dict]] = {}
        self.skipped: dict[str, int] = {}
        self.first_seen: dict[str, str] = {}

    def reject(self, file: str, where: str, reason: str) -> None:
        if self.on_invalid == "error":
            raise InputError(f"{where}: {reason} (fix the row, or set data.on_invalid: skip to drop bad rows)")
        self.skipped[file] = self.skipped.get(file, 0) + 1

    def add(self, role: str, file: str, where: str, convert: Callable[[], dict]) -> None:
        """Convert one raw row (errors from the conversion are that row's problem) and keep it if valid."""
        try:
            example = convert()
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            reason = f"missing field {error}" if isinstance(error, KeyError) else str(error)
            self.reject(file, where, f"unparsable row: {reason}")
            return
        problem = example_problem(example)
        if problem is None and example["id"] in self.first_seen:
            problem = f"duplicate id {example['id']!r} (first at {self.first_seen[example['id']]})"
        if problem is not None:
            self.reject(file, where, problem)
            return
        self.first_seen[example["id"]] = where
        self.splits.setdefault(role, []).append(example)

    def finish(self) -> LoadedDataset:
        for file, count in self.skipped.items():
            log.warning("%s: skipped %d invalid row(s) (data.on_invalid: skip)", file, count)
        return LoadedDataset(splits=self.splits, origin=self.origin, skipped=dict(self.skipped))


def load_dataset_splits(
    dataset: str, path: str | None, on_invalid: str, builtin_task: dict | None = None, seed: int = 0
) -> LoadedDataset:
    """The dataset named by `data.dataset` (and `data.path`), validated, grouped by role."""
    if dataset == "builtin":
        return load_builtin(builtin_task or {}, seed, on_invalid)
    if dataset in BENCHMARKS:
        if path is None:
            return load_from_hub(dataset, on_invalid)
        local = Path(path)
        if not local.is_dir():
            raise InputError(f"data.path={path}: folder not found (a local {dataset} copy in its original format)")
        readers = {"arc_easy": read_arc, "arc_challenge": read_arc, "mmlu": read_mmlu, "aqua_rat": read_aqua}
        collector = RowCollector(on_invalid, str(local))
        readers[dataset](dataset, local, collector)
        return collector.finish()
    if path is not None:
        raise InputError(f"data.path is only for {', '.join(BENCHMARKS)}; set it to null for data.dataset={dataset}")
    return read_canonical(Path(dataset), on_invalid)


def load_builtin(task: dict, seed: int, on_invalid: str) -> LoadedDataset:
    from stages.builtin_world import dataset_splits  # the synthetic world; imported only when used

    collector = RowCollector(on_invalid, "builtin")
    for role, examples in dataset_splits(task, seed).items():
        for index, example in enumerate(examples):
            collector.add(ROLE_ALIASES[role], f"builtin[{role}]", f"builtin[{role}] row {index}", lambda e=example: e)
    return collector.finish()


# ---------------------------------------------------------------- row converters (one raw record -> example)


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


def json_lines(file: Path, collector: RowCollector) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for each non-empty line; unparsable lines go to the collector."""
    with file.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as error:
                collector.reject(str(file), f"{file} line {line_no}", f"unparsable JSON ({error.msg})")


def read_arc(dataset: str, folder: Path, collector: RowCollector) -> None:
    name = HUB_IDS[dataset][1]
    base = folder / name if (folder / name).is_dir() else folder
    for part, role in (("Train", "train"), ("Dev", "val"), ("Test", "test")):
        file = base / f"{name}-{part}.jsonl"
        if not file.exists():
            raise InputError(f"{file}: file not found (data.path must hold {name}-{{Train,Dev,Test}}.jsonl)")
        for line_no, record in json_lines(file, collector):
            collector.add(role, str(file), f"{file} line {line_no}", lambda r=record: arc_example(r))


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
                collector.add(role, str(file), where, lambda c=cells, i=example_id: mmlu_example(c, i, subject))
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
            collector.add(role, str(file), f"{file} line {line_no}", lambda r=record, i=example_id: aqua_example(r, i))


# ---------------------------------------------------------------- the Hugging Face hub (needs network)


def load_from_hub(dataset: str, on_invalid: str) -> LoadedDataset:
    import datasets

    hub_id, config = HUB_IDS[dataset]
    origin = f"{hub_id}:{config}"
    log.info("loading %s from the Hugging Face hub", origin)
    loaded = datasets.load_dataset(hub_id, config)
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
                collector.add(role, file, where, lambda r=row, i=f"{subject}_{stem_split}-{k}": hub_mmlu(r, i))
            elif dataset == "aqua_rat":
                example_id = f"{'dev' if split == 'validation' else split}-{index}"
                collector.add(role, file, where, lambda r=row, i=example_id: aqua_example(r, i))
            else:
                collector.add(role, file, where, lambda r=row: arc_example(hub_arc_record(r)))
    return collector.finish()


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

CANONICAL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def read_canonical(path: Path, on_invalid: str) -> LoadedDataset:
    if not path.exists():
        raise InputError(
            f"data.dataset={path}: neither a known dataset ({', '.join(('builtin', *BENCHMARKS))}) "
            "nor an existing file or save_to_disk folder"
        )
    collector = RowCollector(on_invalid, str(path))
    for where, record in canonical_records(path, collector):
        if not isinstance(record, dict):
            collector.reject(str(path), where, f"unparsable row: expected an object, got {type(record).__name__}")
            continue
        role = ROLE_ALIASES.get(str(record.pop("split", "train") or "train").lower())
        if role is None:
            collector.reject(str(path), where, "split must be one of train / val / validation / dev / test")
            continue
        collector.add(role, str(path), where, lambda r=record: canonical_example(r))
    return collector.finish()


def canonical_records(path: Path, collector: RowCollector) -> Iterator[tuple[str, dict]]:
    """(location, raw record) for every row of a canonical file or save_to_disk folder."""
    if path.is_dir():
        import datasets

        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError as error:
            raise InputError(f"{path}: not a datasets.save_to_disk folder ({error})") from None
        parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
        for split, rows in parts:
            for index, row in enumerate(rows):
                yield f"{path}[{split or 'all'}] row {index}", row if split is None else {**row, "split": split}
    elif path.suffix == ".jsonl" or (
        path.suffix == ".json" and not path.read_text(encoding="utf-8").lstrip()[:1] == "["
    ):
        for line_no, record in json_lines(path, collector):
            yield f"{path} line {line_no}", record
    elif path.suffix == ".json":
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise InputError(f"{path} line {error.lineno}: unparsable JSON ({error.msg})") from None
        if not isinstance(records, list):
            raise InputError(f"{path}: expected a JSON array of examples (or one JSON object per line)")
        for index, record in enumerate(records):
            yield f"{path} row {index}", record
    elif path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            start = 2  # the header is line 1
            for record in reader:
                yield f"{path} line {start}", csv_record(record)  # a quoted cell may span lines: the first
                start = reader.line_num + 1
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for index, record in enumerate(pq.read_table(str(path)).to_pylist()):
            yield f"{path} row {index}", record
    else:
        raise InputError(f"{path}: unsupported file type; use one of {', '.join(CANONICAL_SUFFIXES)} or a folder")


def csv_record(record: dict) -> dict:
    """CSV cells are text: `choices` holds a JSON list, `answer` an integer; empty metadata cells mean null."""
    record = {key: (value if value != "" else None) for key, value in record.items()}
    for key, parse in (("choices", json.loads), ("answer", int)):
        try:
            record[key] = parse(record[key]) if record.get(key) is not None else None
        except ValueError:
            pass  # left as text: canonical_example/example_problem name the problem
    return record


def canonical_example(record: dict) -> dict:
    if not isinstance(record, dict):
        raise ValueError(f"expected an object per row, got {type(record).__name__}")
    example = {name: record.get(name) for name in ("id", "question", "choices", "answer", "source", "subject")}
    if isinstance(example["choices"], tuple):
        example["choices"] = list(example["choices"])
    return example
