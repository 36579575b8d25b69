"""Read-only views for reconciliation on PostgreSQL (as bridge.store.reconcile): what the
bridges delivered (or hold) per sink, and their accepted events, in a time range given as the
SQLite store's UTC text; times come back as that text too."""

from __future__ import annotations

from typing import Any

from bridge.store.postgres.connection import PostgresBase
from bridge.store.postgres.rows import fetch_dicts


class PostgresReconcile(PostgresBase):
    async def sink_deliveries(self, sink: str, *, since: str, until: str) -> list[dict[str, Any]]:
        """Every delivery of the sink with since <= event_time < until (UTC text), any state:
        id, person, state, outcome, action, event_time; in time order."""
        async with self._reading() as conn:
            return await fetch_dicts(
                conn,
                "SELECT d.id, d.person, d.state, d.outcome, e.action, d.event_time"
                " FROM deliveries AS d JOIN events AS e ON e.id = d.event_id"
                " WHERE d.sink = %s AND d.event_time >= %s::timestamptz"
                " AND d.event_time < %s::timestamptz ORDER BY d.event_time, d.id",
                (sink, since, until),
            )

    async def accepted_events(self, *, since: str, until: str) -> list[dict[str, Any]]:
        """Accepted events (not duplicates, not unmapped) with since <= event_time < until:
        id, badge, user_id, action, event_time; in time order."""
        async with self._reading() as conn:
            return await fetch_dicts(
                conn,
                "SELECT id, badge, user_id, action, event_time FROM events"
                " WHERE status = 'accepted' AND event_time >= %s::timestamptz"
                " AND event_time < %s::timestamptz ORDER BY event_time, id",
                (since, until),
            )
