"""The people directory's cache on PostgreSQL, as bridge.store.people keeps it in SQLite: each
source's last good records, replaced whole when a fetch succeeds; a failed fetch only notes the
error. Every instance reads the same cache, so a sync by one maps badges for all (each notices
the new `revision` at its next look)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bridge.store.postgres.connection import Connection, PostgresBase, execute


class PostgresPeople(PostgresBase):
    async def save_directory_source(
        self, source: str, rows: Iterable[Mapping[str, Any]], *, now: float
    ) -> bool:
        """Replace the source's records; True when they differ from the cached ones."""
        texts = [
            (row.get("badge"), row.get("join_on"), json.dumps(row["fields"], sort_keys=True))
            for row in rows
        ]
        digest = hashlib.sha256(json.dumps(texts).encode()).hexdigest()
        return await self._transaction(_replace_records, source, texts, digest, now)

    async def directory_source_failed(self, source: str, error: str, *, now: float) -> None:
        await self._transaction(
            execute,
            "INSERT INTO directory_sources (source, error, failed_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (source) DO UPDATE SET error = excluded.error,"
            " failed_at = COALESCE(directory_sources.failed_at, excluded.failed_at)",
            (source, error, now),
        )

    async def directory_revision(self) -> int:
        async with self._reading() as conn:
            row = await (
                await conn.execute("SELECT COALESCE(MAX(revision), 0) FROM directory_sources")
            ).fetchone()
        return 0 if row is None else int(row[0])

    async def directory_records(self, sources: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        cached: dict[str, list[dict[str, Any]]] = {source: [] for source in sources}
        if not sources:
            return cached
        async with self._reading() as conn:
            cursor = await conn.execute(
                "SELECT source, badge, join_on, fields FROM directory_records"
                " WHERE source = ANY(%s) ORDER BY source, seq",
                (list(sources),),
            )
            async for source, badge, join_on, fields in cursor:
                cached[source].append(
                    {"badge": badge, "join_on": join_on, "fields": json.loads(fields)}
                )
        return cached

    async def directory_sync_state(self) -> list[dict[str, Any]]:
        async with self._reading() as conn:
            cursor = await conn.execute(
                "SELECT source, records, synced_at, changed_at, error, failed_at"
                " FROM directory_sources ORDER BY source"
            )
            names = ("source", "records", "synced_at", "changed_at", "error", "failed_at")
            return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]


async def _replace_records(
    conn: Connection, source: str, texts: list[tuple[Any, Any, str]], digest: str, now: float
) -> bool:
    # Two instances syncing at once: one after the other, so revisions only grow.
    await conn.execute("LOCK TABLE directory_sources IN SHARE ROW EXCLUSIVE MODE")
    row = await (
        await conn.execute("SELECT digest FROM directory_sources WHERE source = %s", (source,))
    ).fetchone()
    changed = row is None or row[0] != digest
    if changed:
        await conn.execute("DELETE FROM directory_records WHERE source = %s", (source,))
        async with conn.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO directory_records (source, seq, badge, join_on, fields)"
                " VALUES (%s, %s, %s, %s, %s)",
                [(source, n, *text) for n, text in enumerate(texts)],
            )
    await conn.execute(
        "INSERT INTO directory_sources (source, revision, records, digest, synced_at, changed_at)"
        " VALUES (%s, (SELECT COALESCE(MAX(revision), 0) + 1 FROM directory_sources),"
        " %s, %s, %s, %s) ON CONFLICT (source) DO UPDATE SET synced_at = excluded.synced_at,"
        " error = NULL, failed_at = NULL, records = excluded.records,"
        " revision = CASE WHEN directory_sources.digest IS NOT DISTINCT FROM excluded.digest"
        " THEN directory_sources.revision ELSE excluded.revision END,"
        " changed_at = CASE WHEN directory_sources.digest IS NOT DISTINCT FROM excluded.digest"
        " THEN directory_sources.changed_at ELSE excluded.changed_at END,"
        " digest = excluded.digest",
        (source, len(texts), digest, now, now),
    )
    return changed
