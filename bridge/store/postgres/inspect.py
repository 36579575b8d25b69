"""Status counts on PostgreSQL, and which instance holds what."""

from __future__ import annotations

import time
from typing import Any

from bridge.store.postgres.connection import PostgresBase
from bridge.store.records import QueueStatus, SinkQueue, utc_text


class PostgresInspect(PostgresBase):
    async def recent_events(self, limit: int = 20) -> list[dict[str, object]]:
        """As Store.recent_events (event_time as the same UTC text)."""
        names = ("key", "terminal", "subject", "action", "action_inferred", "event_time", "status")
        async with self._reading() as conn:
            cursor = await conn.execute(
                "SELECT key, terminal, subject, action, action_inferred, event_time, status"
                " FROM events ORDER BY id DESC LIMIT %s",
                (limit,),
            )
            rows = await cursor.fetchall()
        return [
            {**dict(zip(names, row, strict=True)), "event_time": utc_text(row[5])} for row in rows
        ]

    async def recent_errors(self, limit: int = 10) -> list[dict[str, object]]:
        names = ("sink", "state", "attempts", "last_error", "key")
        async with self._reading() as conn:
            cursor = await conn.execute(
                "SELECT d.sink, d.state, d.attempts, d.last_error, e.key FROM deliveries AS d"
                " JOIN events AS e ON e.id = d.event_id WHERE d.last_error IS NOT NULL"
                " AND d.state IN ('pending', 'dead', 'held') ORDER BY d.id DESC LIMIT %s",
                (limit,),
            )
            return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

    async def status(self, *, now: float) -> QueueStatus:
        """What Store.status reports, counted with GROUP BY (see queue_counts)."""
        sinks = await self.queue_counts(now=now)
        async with self._reading() as conn:
            cursor = await conn.execute("SELECT status, COUNT(*) FROM events GROUP BY status")
            events = dict(await cursor.fetchall())
            row = await (
                await conn.execute(
                    "SELECT (SELECT COUNT(*) FROM events WHERE action_inferred),"
                    " (SELECT COUNT(*) FROM deliveries WHERE attempts > 1),"
                    " (SELECT COUNT(*) FROM rejected),"
                    " (SELECT COALESCE(SUM(payload_size), 0) FROM rejected)"
                )
            ).fetchone()
        inferred, retried, rejected, rejected_bytes = row if row is not None else (0, 0, 0, 0)
        return {
            "events": events,
            "rejected": rejected,
            "rejected_bytes": int(rejected_bytes),
            "rejected_max_bytes": 0,
            "rejected_pruned": 0,
            "retried": retried,
            "inferred": inferred,
            "sinks": sinks,
        }

    async def queue_counts(self, *, now: float | None = None) -> dict[str, SinkQueue]:
        """Deliveries per sink and state, and each sink's oldest undelivered age. (A GROUP BY:
        the triggers-kept counters of the SQLite store would be one hot row for every
        instance; a cheaper form for large histories is still to come.)"""
        now = time.time() if now is None else now
        sinks: dict[str, SinkQueue] = {}
        async with self._reading() as conn:
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
        async with self._reading() as conn:
            cursor = await conn.execute(
                "SELECT claimed_by, COUNT(*), MAX(lease_until) FROM deliveries"
                " WHERE state = 'inflight' AND claimed_by IS NOT NULL GROUP BY claimed_by"
            )
            return {
                instance: {"claims": count, "lease_until": lease}
                for instance, count, lease in await cursor.fetchall()
            }
