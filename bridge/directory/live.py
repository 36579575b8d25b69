"""The directory the daemon maps badges with: the file merged with the cached sources.

`current` is an immutable Directory, swapped whole, so a lookup never sees half a merge. Only
that packed Directory is kept between merges: the sources' records are read from the store's
cache again for each merge (a file change or a sync), not held as objects per person.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.directory.file import Directory, DirectoryFile
from bridge.directory.heap import give_back_free_heap
from bridge.directory.merge import merge_directory
from bridge.directory.records import Record
from bridge.store import DaemonStore


async def cached_records(store: DaemonStore, sources: Sequence[str]) -> dict[str, list[Record]]:
    cached = await store.directory_records(sources)
    return {name: _records(rows) for name, rows in cached.items()}


def _records(rows: list[dict[str, Any]]) -> list[Record]:
    """The rows as Records, each row let go once converted (50,000 of both at once else)."""
    rows.reverse()
    records = []
    while rows:
        records.append(Record.from_row(rows.pop()))
    return records


class LiveDirectory:
    def __init__(self, *, file: DirectoryFile | None, sources: Sequence[str]) -> None:
        self.file = file
        self.sources = tuple(sources)
        self.revision = -1
        self.current = self._merge({})

    async def refresh(self, store: DaemonStore, *, force: bool = False) -> bool:
        """Merge again if a sync changed the cache (here or in another process) or, with
        `force`, anyway (the file changed). True if anything was merged."""
        revision = await store.directory_revision()
        synced = revision != self.revision and bool(self.sources)
        if not synced and not force:
            return False
        records = await cached_records(store, self.sources) if self.sources else {}
        self.revision = revision
        self.current = self._merge(records)
        del records  # before the trim: the merge is done with them
        give_back_free_heap()
        return True

    def _merge(self, records: dict[str, list[Record]]) -> Directory:
        file = self.file.current if self.file is not None else None
        return merge_directory(file, {name: records.get(name, []) for name in self.sources})
