"""Read-only views for reconciliation on PostgreSQL (as bridge.store.reconcile): times in and out
as the SQLite store's UTC text, so reconcile reads both alike; and the replay that requeues
what a vendor lost."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bridge.store.admin import Moved
from bridge.store.postgres.connection import Connection, PostgresBase
from bridge.store.records import parse_utc_text, utc_text


class PostgresReconcile(PostgresBase):
    async def sink_deliveries(self, sink: str, *, since: str, until: str) -> list[dict[str, Any]]:
        names = ("id", "person", "state", "outcome", "action", "event_time")
        async with self._reading() as conn:
            cursor = await conn.execute(
                "SELECT d.id, d.person, d.state, d.outcome, e.action, d.event_time"
                " FROM deliveries AS d JOIN events AS e ON e.id = d.event_id"
                " WHERE d.sink = %s AND d.event_time >= %s AND d.event_time < %s"
                " ORDER BY d.event_time, d.id",
                (sink, parse_utc_text(since), parse_utc_text(until)),
            )
            return [_row(names, row) for row in await cursor.fetchall()]

    async def accepted_events(self, *, since: str, until: str) -> list[dict[str, Any]]:
        names = ("id", "badge", "user_id", "action", "event_time")
        async with self._reading() as conn:
            cursor = await conn.execute(
                "SELECT id, badge, user_id, action, event_time FROM events"
                " WHERE status = 'accepted' AND event_time >= %s AND event_time < %s"
                " ORDER BY event_time, id",
                (parse_utc_text(since), parse_utc_text(until)),
            )
            return [_row(names, row) for row in await cursor.fetchall()]

    async def replay(self, ids: Sequence[int], *, now: float | None = None) -> Moved:
        """Send delivered deliveries again (pending, due now, `replayed` counted); the others
        are reported with their state."""
        at = time.time() if now is None else now
        moved = await self._transaction(_replay, list(ids), at)
        if moved.changed:
            self.work.notify()
        return moved


async def _replay(conn: Connection, ids: list[int], now: float) -> Moved:
    cursor = await conn.execute(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = %s, replayed = replayed + 1"
        " WHERE id = ANY(%s) AND state = 'delivered' RETURNING id",
        (now, ids),
    )
    changed = sorted(row[0] for row in await cursor.fetchall())
    others = await (
        await conn.execute(
            "SELECT id, state FROM deliveries WHERE id = ANY(%s)",
            (sorted(set(ids) - set(changed)),),
        )
    ).fetchall()
    refused: dict[int, str | None] = dict.fromkeys(set(ids) - set(changed))
    refused.update({row[0]: row[1] for row in others})
    return Moved(changed=changed, refused=refused)


def _row(names: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
    data = dict(zip(names, row, strict=True))
    if isinstance(data.get("event_time"), datetime):
        data["event_time"] = utc_text(data["event_time"])
    return data
