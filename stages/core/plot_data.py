"""Plot data for `dvc plots`: one CSV writer for every stage, so every file has the same dialect."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def cell(value: Any) -> str:
    """Floats to 6 significant digits (plots need no more, and the files stay diff-able); the rest as text."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def write_csv(path: Path, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    """`header` then `rows`, comma-separated, `\\n` line ends (csv's default is `\\r\\n`)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([cell(value) for value in row] for row in rows)
