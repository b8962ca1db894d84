"""`fingerprint@<role>`: what a local teacher or student folder holds, recorded on every `dvc repro`.

DVC cannot depend on a path a param names (`teacher.model` may be a hub id, a folder or builtin), so an
`always_changed` stage writes `data/fingerprints/<role>.json`: the model as written and, for a local folder, a
sha256 of its files. The file's bytes change only when the folder's content does, and `models@<role>` depends on
it, so an in-place edit of the weights reruns `models@<role>` and everything after it, and nothing else.

Hashing a large folder on every `dvc repro` would cost minutes, so the hash is reused while every file's size and
modification time are unchanged (`.<role>.stat.json` beside the output, not tracked: DVC itself does the same).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from stages.core.atomic import write_text_atomic
from stages.modeling.loading import hash_folder, relative_to_root

log = logging.getLogger(__name__)


def file_stats(folder: Path) -> list[list[Any]]:
    """[relative path, size, mtime_ns] of every file, sorted: what an edit in place changes."""
    stats = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = file.stat()
        stats.append([str(file.relative_to(folder)), stat.st_size, stat.st_mtime_ns])
    return stats


def content_hash(folder: Path, stat_file: Path) -> str:
    """sha256 of `folder`'s files, reused from `stat_file` while no file's size or mtime changed."""
    stats = file_stats(folder)
    try:
        cached = json.loads(stat_file.read_text())
        if cached["folder"] == str(folder.resolve()) and cached["stats"] == stats:
            return str(cached["hash"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no usable cache: hash the files
    digest = hash_folder(folder)
    write_text_atomic(stat_file, json.dumps({"folder": str(folder.resolve()), "stats": stats, "hash": digest}))
    return digest


def fingerprint(source: str, out: Path) -> dict[str, Any]:
    """Write `out` for the model `source` (a param's value); returns what it wrote."""
    local = Path(source).expanduser()
    record: dict[str, Any] = {"model": source}
    if source != "builtin" and local.is_dir():
        stat_file = out.parent / f".{out.stem}.stat.json"
        record = {"model": relative_to_root(local), "content": content_hash(local, stat_file)}
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    if not out.exists() or out.read_text() != text:
        write_text_atomic(out, text)
    log.info("%s: %s", out, record)
    return record
