"""Dataset adapters: every supported source becomes canonical examples grouped by the dataset's own splits.

`load_dataset_splits(dataset, path, on_invalid, ...)` returns a `LoadedDataset` whose `splits` maps the roles
`train` / `val` / `test` to canonical example dicts (see `stages.sources.schema`), in source order. A role the source
lacks is simply absent; `stages.prepare` decides how to carve it (and logs that it did).

Sources (`data.dataset`):
- `builtin`: `stages.sources.builtin_world.dataset_splits(builtin.task, builtin.seed)`.
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
import functools
import json
from collections.abc import Iterator
from pathlib import Path

from stages.core.errors import InputError
from stages.sources.benchmarks import BENCHMARKS, load_from_hub, read_local
from stages.sources.builtin_world import TaskConfig
from stages.sources.rows import ROLE_ALIASES, LoadedDataset, RowCollector, json_lines

__all__ = ["LoadedDataset", "load_dataset_splits"]


def load_dataset_splits(
    dataset: str, path: str | None, on_invalid: str, builtin_task: TaskConfig | None = None, builtin_seed: int = 0
) -> LoadedDataset:
    """The dataset named by `data.dataset` (and `data.path`), validated, grouped by role."""
    for named in (path, None if dataset == "builtin" or dataset in BENCHMARKS else dataset):
        if named is not None and Path(named).exists():
            check_utf8(Path(named))
    if dataset == "builtin":
        return load_builtin(builtin_task or TaskConfig(), builtin_seed, on_invalid)
    if dataset in BENCHMARKS:
        if path is None:
            return load_from_hub(dataset, on_invalid)
        local = Path(path)
        if not local.is_dir():
            raise InputError(f"data.path={path}: folder not found (a local {dataset} copy in its original format)")
        return read_local(dataset, local, on_invalid)
    if path is not None:
        raise InputError(f"data.path is only for {', '.join(BENCHMARKS)}; set it to null for data.dataset={dataset}")
    return read_canonical(Path(dataset), on_invalid)


TEXT_SUFFIXES = (".jsonl", ".json", ".csv", ".txt", ".tsv")


def check_utf8(path: Path) -> None:
    """Every text file of a local dataset must be UTF-8: a file-level error (whatever data.on_invalid says), with
    the file and the first bad byte named, before any row is read."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES)
    for file in files:
        if file.suffix not in TEXT_SUFFIXES or not file.is_file():
            continue
        try:
            file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            line = file.read_bytes()[: error.start].count(b"\n") + 1
            raise InputError(
                f"{file} line {line}: not UTF-8 (byte 0x{error.object[error.start]:02x} at offset {error.start}); "
                "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
            ) from None


def load_builtin(task: TaskConfig, seed: int, on_invalid: str) -> LoadedDataset:
    from stages.sources.builtin_world import dataset_splits

    collector = RowCollector(on_invalid, "builtin")
    for role, examples in dataset_splits(task, seed).items():
        for index, example in enumerate(examples):
            collector.add(
                ROLE_ALIASES[role],
                f"builtin[{role}]",
                f"builtin[{role}] row {index}",
                functools.partial(as_is, example),
            )
    return collector.finish()


def as_is(example: dict) -> dict:
    """The conversion of a row that is already an example."""
    return example


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
        collector.add(role, str(path), where, functools.partial(canonical_example, record))
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
