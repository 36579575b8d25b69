"""Read-only views for reconciliation: what the bridge delivered (or holds) per sink, and its
accepted events, in a time range. Requeueing what a vendor lost reuses AdminMixin.replay (a
guarded delivered -> pending UPDATE, `replayed` counted)."""

from __future__ import annotations

from typing import Any

from bridge.store.connection import StoreBase, fetch_all


class ReconcileMixin(StoreBase):
    async def sink_deliveries(self, sink: str, *, since: str, until: str) -> list[dict[str, Any]]:
        """Every delivery of the sink with since <= event_time < until (UTC text), any state:
        id, person, state, outcome, action, event_time; in time order."""
        rows = await fetch_all(
            self._db,
            "SELECT d.id, d.person, d.state, d.outcome, e.action, d.event_time"
            " FROM deliveries AS d JOIN events AS e ON e.id = d.event_id"
            " WHERE d.sink = ? AND d.event_time >= ? AND d.event_time < ?"
            " ORDER BY d.event_time, d.id",
            (sink, since, until),
        )
        return [dict(row) for row in rows]

    async def accepted_events(self, *, since: str, until: str) -> list[dict[str, Any]]:
        """Accepted events (not duplicates, not unmapped) with since <= event_time < until:
        id, badge, user_id, action, event_time; in time order."""
        rows = await fetch_all(
            self._db,
            "SELECT id, badge, user_id, action, event_time FROM events"
            " WHERE status = 'accepted' AND event_time >= ? AND event_time < ?"
            " ORDER BY event_time, id",
            (since, until),
        )
        return [dict(row) for row in rows]
