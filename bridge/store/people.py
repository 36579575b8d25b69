"""The people directory's cache: each source's last good list of records, and its sync state.

A source's records are replaced whole in one transaction when a fetch succeeds; a failed fetch
only notes the error, so the last good records stay in use. Records hold directory columns
only (never a key or a token: the sources do not put them there).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bridge.store.connection import StoreBase, fetch_all

RECORDS_BATCH = 1000


class PeopleMixin(StoreBase):
    async def save_directory_source(
        self, source: str, rows: Iterable[Mapping[str, Any]], *, now: float
    ) -> bool:
        """Replace the source's records; True when they differ from the cached ones. `rows`
        may be a generator: each is made into its text and let go (50,000 at a sync)."""
        texts = [
            (row.get("badge"), row.get("join_on"), json.dumps(row["fields"], sort_keys=True))
            for row in rows
        ]
        return await self._write(_replace_records, source, texts, _digest(texts), now)

    async def directory_source_failed(self, source: str, error: str, *, now: float) -> None:
        """Note a failed fetch; the source's cached records stay as they were."""
        await self._write(_source_failed, source, error, now)

    async def directory_revision(self) -> int:
        rows = await fetch_all(self._db, "SELECT COALESCE(MAX(revision), 0) FROM directory_sources")
        return int(rows[0][0])

    async def directory_records(self, sources: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The cached records of the given sources, in their order (badge, join_on, fields)."""
        cached: dict[str, list[dict[str, Any]]] = {source: [] for source in sources}
        if not sources:
            return cached
        # In batches: a list of 50,000 rows would stay behind in aiosqlite's thread (it keeps
        # its last answer until the next call) and costs as much as the records themselves.
        async with self._db.execute(
            "SELECT source, badge, join_on, fields FROM directory_records"
            f" WHERE source IN ({','.join('?' * len(sources))}) ORDER BY source, seq",
            list(sources),
        ) as cursor:
            while rows := await cursor.fetchmany(RECORDS_BATCH):
                for row in rows:
                    cached[row["source"]].append(
                        {
                            "badge": row["badge"],
                            "join_on": row["join_on"],
                            "fields": json.loads(row["fields"]),
                        }
                    )
        return cached

    async def directory_sync_state(self) -> list[dict[str, Any]]:
        """Per source: records, synced_at, changed_at, error, failed_at (unix seconds)."""
        rows = await fetch_all(
            self._db,
            "SELECT source, records, synced_at, changed_at, error, failed_at"
            " FROM directory_sources ORDER BY source",
        )
        return [dict(row) for row in rows]


def _digest(texts: list[tuple[Any, Any, str]]) -> str:
    """sha256 of json.dumps(texts), the digest caches were written with, made piece by piece:
    the whole text would be one string of ~10 MB at 50,000 records."""
    digest = hashlib.sha256(b"[")
    for number, text in enumerate(texts):
        digest.update((", " if number else "").encode() + json.dumps(text).encode())
    digest.update(b"]")
    return digest.hexdigest()


# --- on the writer's thread (StoreBase._write) -------------------------------------------------


def _replace_records(
    conn: sqlite3.Connection,
    source: str,
    texts: list[tuple[Any, Any, str]],
    digest: str,
    now: float,
) -> bool:
    found = conn.execute(
        "SELECT digest FROM directory_sources WHERE source = ?", (source,)
    ).fetchone()
    changed = found is None or found[0] != digest
    if changed:
        conn.execute("DELETE FROM directory_records WHERE source = ?", (source,))
        conn.executemany(
            "INSERT INTO directory_records (source, seq, badge, join_on, fields)"
            " VALUES (?, ?, ?, ?, ?)",
            [(source, n, *text) for n, text in enumerate(texts)],
        )
    conn.execute(
        "INSERT INTO directory_sources (source, revision, records, digest, synced_at,"
        " changed_at) VALUES (?, (SELECT COALESCE(MAX(revision), 0) + 1"
        " FROM directory_sources), ?, ?, ?, ?)"
        " ON CONFLICT (source) DO UPDATE SET synced_at = excluded.synced_at,"
        " error = NULL, failed_at = NULL, records = excluded.records,"
        " revision = CASE WHEN directory_sources.digest IS excluded.digest"
        " THEN directory_sources.revision ELSE excluded.revision END,"
        " changed_at = CASE WHEN directory_sources.digest IS excluded.digest"
        " THEN directory_sources.changed_at ELSE excluded.changed_at END,"
        " digest = excluded.digest",
        (source, len(texts), digest, now, now),
    )
    return changed


def _source_failed(conn: sqlite3.Connection, source: str, error: str, now: float) -> None:
    conn.execute(
        "INSERT INTO directory_sources (source, error, failed_at) VALUES (?, ?, ?)"
        " ON CONFLICT (source) DO UPDATE SET error = excluded.error,"
        " failed_at = COALESCE(directory_sources.failed_at, excluded.failed_at)",
        (source, error, now),
    )
