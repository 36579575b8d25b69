"""Status counts on PostgreSQL, and which instance holds what; the views of the status page
and the `rejected` command (as bridge.store.inspect, times as its UTC text)."""

from __future__ import annotations

import time
from typing import Any

from bridge.store.inspect import _REJECTED_SUMMARY
from bridge.store.postgres.connection import PostgresBase
from bridge.store.postgres.rejected import rejected_budget
from bridge.store.postgres.rows import fetch_dicts
from bridge.store.records import QueueStatus, SinkQueue

# _REJECTED_SUMMARY is the SQLite store's column list: a page of rejected rows reads alike.


class PostgresInspect(PostgresBase):
    async def status(self, *, now: float) -> QueueStatus:
        """What Store.status reports, counted with GROUP BY (see queue_counts)."""
        sinks = await self.queue_counts(now=now)
        async with self._reading() as conn:
            cursor = await conn.execute("SELECT status, COUNT(*) FROM events GROUP BY status")
            events = dict(await cursor.fetchall())
            row = await (
                await conn.execute(
                    "SELECT (SELECT COUNT(*) FROM events WHERE action_inferred),"
                    " (SELECT COUNT(*) FROM deliveries WHERE attempts > 1)"
                )
            ).fetchone()
            rejected = await rejected_budget(conn)
        inferred, retried = row if row is not None else (0, 0)
        return {
            "events": events,
            "rejected": rejected["rejected"],
            "rejected_bytes": rejected["rejected_bytes"],
            "rejected_max_bytes": rejected["rejected_max_bytes"],
            "rejected_pruned": rejected["rejected_pruned"],
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

    async def rejected_counts(self) -> dict[str, int]:
        """rejected, rejected_bytes, rejected_max_bytes, rejected_pruned: as in QueueStatus."""
        async with self._reading() as conn:
            return await rejected_budget(conn)

    async def recent_events(self, limit: int = 20) -> list[dict[str, object]]:
        async with self._reading() as conn:
            return await fetch_dicts(
                conn,
                "SELECT key, terminal, subject, action, action_inferred, event_time, status"
                " FROM events ORDER BY id DESC LIMIT %s",
                (limit,),
            )

    async def recent_errors(self, limit: int = 10) -> list[dict[str, object]]:
        async with self._reading() as conn:
            return await fetch_dicts(
                conn,
                "SELECT d.sink, d.state, d.attempts, d.last_error, e.key FROM deliveries AS d"
                " JOIN events AS e ON e.id = d.event_id WHERE d.last_error IS NOT NULL"
                " AND d.state IN ('pending', 'dead', 'held') ORDER BY d.id DESC LIMIT %s",
                (limit,),
            )

    async def rejected_page(
        self, *, limit: int, before: int | None = None, include_reprocessed: bool = True
    ) -> list[dict[str, Any]]:
        """Rejected rows newest first, at most `limit`, ids below `before`; without payloads."""
        sql = f"SELECT {_REJECTED_SUMMARY} FROM rejected WHERE id < %s"
        if not include_reprocessed:
            sql += " AND reprocessed_at IS NULL"
        params = (2**63 - 1 if before is None else before, limit)
        async with self._reading() as conn:
            return await fetch_dicts(conn, sql + " ORDER BY id DESC LIMIT %s", params)

    async def rejected_row(self, rejected_id: int) -> dict[str, Any] | None:
        """One rejected row in full: payload (as kept), its size and hash."""
        async with self._reading() as conn:
            rows = await fetch_dicts(
                conn,
                f"SELECT {_REJECTED_SUMMARY}, payload, payload_sha256 FROM rejected WHERE id = %s",
                (rejected_id,),
            )
        return rows[0] if rows else None
