"""The payroll audit trail: pruned events with their delivery outcomes, written before the rows
are deleted.

One gzipped JSON-lines file per local day and pruning batch, `<local day>.<first event
id>.jsonl.gz` (a line per event, its deliveries inside), created 0600 in a 0700 folder. A file
is written whole under a temporary name, fsynced, renamed and its folder fsynced, so a crash
leaves either the complete file or none: never a torn gzip stream that would spoil the rest of
a day's file, which appending to one file per day could. Should the deleting transaction fail
after the archive was written, the same events are archived again by a later batch (at least
once; the `id` field tells copies apart).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def write_day_files(folder: Path, events: Iterable[Mapping[str, Any]]) -> list[Path]:
    """Write `events` (each with its local_day and id) grouped by local day; the files made."""
    by_day: dict[str, list[Mapping[str, Any]]] = {}
    for event in events:
        by_day.setdefault(str(event["local_day"]), []).append(event)
    if not by_day:
        return []
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for day, rows in sorted(by_day.items()):
        target = folder / f"{day}.{min(int(row['id']) for row in rows):012d}.jsonl.gz"
        _write_whole(target, rows)
        written.append(target)
    _fsync_folder(folder)
    return written


def read_day_file(path: Path) -> list[dict[str, Any]]:
    """The events in one archive file (for tests and an operator's script)."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _write_whole(target: Path, rows: list[Mapping[str, Any]]) -> None:
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped:
                for row in rows:
                    line = json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"
                    zipped.write(line.encode("utf-8", "surrogatepass"))
            raw.flush()
            os.fsync(raw.fileno())
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
