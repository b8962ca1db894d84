"""Row validation shared by every dataset adapter: canonical examples grouped by role, bad rows counted."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.core.errors import InputError
from stages.sources.schema import duplicate_options, example_problem

log = logging.getLogger(__name__)

ROLES = ("train", "val", "test")
WARN_ROWS = 5  # rows named per file in a warning; the rest counted
ROLE_ALIASES = {"train": "train", "val": "val", "validation": "val", "dev": "val", "test": "test"}


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
        self.duplicates: dict[str, int] = {}  # file -> rows with duplicate option texts (warned, kept)

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
        duplicate = duplicate_options(example)
        if duplicate is not None:  # kept (real datasets have a few), but said, with the row
            self.duplicates[file] = self.duplicates.get(file, 0) + 1
            if self.duplicates[file] <= WARN_ROWS:
                log.warning("%s: %s: the readouts cannot tell them apart (kept)", where, duplicate)
        self.splits.setdefault(role, []).append(example)

    def finish(self) -> LoadedDataset:
        for file, count in self.duplicates.items():
            if count > WARN_ROWS:
                log.warning("%s: %d rows in all have duplicate option texts (the first %d named above)", file, count,
                            WARN_ROWS)  # fmt: skip
        for file, count in self.skipped.items():
            log.warning("%s: skipped %d invalid row(s) (data.on_invalid: skip)", file, count)
        return LoadedDataset(splits=self.splits, origin=self.origin, skipped=dict(self.skipped))


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
