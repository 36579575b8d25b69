"""Status counts on PostgreSQL, and which instance holds what."""

from __future__ import annotations

import time
from typing import Any

from bridge.store.postgres.connection import PostgresBase
from bridge.store.records import SinkQueue


class PostgresInspect(PostgresBase):
    async def queue_counts(self) -> dict[str, SinkQueue]:
        """Deliveries per sink and state, and each sink's oldest undelivered age. (A GROUP BY:
        the triggers-kept counters of the SQLite store would be one hot row for every
        instance; a cheaper form for large histories is still to come.)"""
        now = time.time()
        sinks: dict[str, SinkQueue] = {}
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT sink, state, COUNT(*), MIN(created_at) FILTER"
                " (WHERE state IN ('pending', 'inflight')) FROM deliveries GROUP BY sink, state"
            )
            for sink, state, count, oldest in await cursor.fetchall():
                entry = sinks.setdefault(sink, {"states": {}, "oldest_pending_seconds": None})
                entry["states"][state] = count
                if oldest is not None:
                    age = now - oldest
                    known = entry["oldest_pending_seconds"]
                    entry["oldest_pending_seconds"] = age if known is None else max(known, age)
        return sinks

    async def claims_by_instance(self) -> dict[str, dict[str, Any]]:
        """Per instance: deliveries it holds in flight and when its latest lease runs out."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT claimed_by, COUNT(*), MAX(lease_until) FROM deliveries"
                " WHERE state = 'inflight' AND claimed_by IS NOT NULL GROUP BY claimed_by"
            )
            return {
                instance: {"claims": count, "lease_until": lease}
                for instance, count, lease in await cursor.fetchall()
            }
