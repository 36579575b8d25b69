"""The directory the daemon maps badges with: the file merged with the cached sources.

`current` is an immutable Directory, swapped whole, so a lookup never sees half a merge.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.directory.file import Directory, DirectoryFile
from bridge.directory.merge import Merged, merge
from bridge.directory.records import Record
from bridge.store import DaemonStore


async def cached_records(store: DaemonStore, sources: Sequence[str]) -> dict[str, list[Record]]:
    cached = await store.directory_records(sources)
    return {name: [Record.from_row(row) for row in rows] for name, rows in cached.items()}


class LiveDirectory:
    def __init__(self, *, file: DirectoryFile | None, sources: Sequence[str]) -> None:
        self.file = file
        self.sources = tuple(sources)
        self._records: dict[str, list[Record]] = {}
        self.revision = -1
        self.merged = self._merge()

    @property
    def current(self) -> Directory:
        return self.merged.directory

    async def refresh(self, store: DaemonStore, *, force: bool = False) -> bool:
        """Re-read the cache if a sync changed it (here or in another process) and merge
        again; with `force` merge anyway (the file changed). True if anything was merged."""
        revision = await store.directory_revision()
        if revision != self.revision and self.sources:
            self._records = await cached_records(store, self.sources)
        elif not force:
            return False
        self.revision = revision
        self.merged = self._merge()
        return True

    def _merge(self) -> Merged:
        file = self.file.current if self.file is not None else None
        return merge(file, {name: self._records.get(name, []) for name in self.sources})
