"""Bounded history on PostgreSQL: the SQLite store's rules (bridge.store.retention), in batches.

An event may go once every one of its deliveries is delivered or dropped and settled before the
cutoff, and it was received before it; its key is kept (`kept_keys`) so a late resend is still a
duplicate. Each batch is one transaction: archive written and fsynced first (when configured),
then keys kept, then rows deleted. Space comes back through autovacuum; nothing here vacuums.
Several instances may prune at once: a batch locks its events `FOR UPDATE SKIP LOCKED`, so two
never delete the same rows, and each skips what another is working on.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bridge.store.archive import write_day_files
from bridge.store.postgres.connection import Connection, PostgresBase, execute
from bridge.store.records import utc_text
from bridge.store.retention import BATCH, DAY, PruneReport, RetentionLoop, RetentionPolicy

_BUSY_SQL = (
    "SELECT EXISTS (SELECT 1 FROM deliveries WHERE state = 'inflight') OR EXISTS"
    " (SELECT 1 FROM deliveries WHERE state = 'pending' AND next_attempt_at <= %s)"
)


class PostgresRetention(RetentionLoop, PostgresBase):
    async def is_quiet(self, quiet_seconds: float) -> bool:
        """No ingest here for `quiet_seconds`, nothing in flight and nothing due anywhere."""
        if time.monotonic() - self.last_ingest < quiet_seconds:
            return False
        async with self._reading() as conn:
            row = await (await conn.execute(_BUSY_SQL, (time.time(),))).fetchone()
        return row is None or not row[0]

    async def prune(
        self,
        policy: RetentionPolicy,
        *,
        now: float,
        keep_going: Callable[[], Awaitable[bool]] | None = None,
    ) -> PruneReport:
        report = PruneReport()
        cutoff = now - policy.retain_days * DAY
        after = 0
        while True:
            going, deliveries, files, after, done = await self._transaction(
                _prune_events, after, cutoff, now, policy.archive_dir
            )
            report.events += going
            report.deliveries += deliveries
            report.archive_files += files
            if done:
                break
            if keep_going is not None and not await keep_going():
                report.complete = False
                return report
        keys_before = now - policy.dedupe_days * DAY
        while n := await self._transaction(
            execute,
            "DELETE FROM kept_keys WHERE key IN (SELECT key FROM kept_keys WHERE pruned_at < %s"
            " ORDER BY pruned_at LIMIT %s FOR UPDATE SKIP LOCKED)",
            (keys_before, BATCH),
        ):
            report.keys_expired += n
        rejected_before = datetime.fromtimestamp(now - policy.rejected_retain_days * DAY, UTC)
        while n := await self._transaction(
            execute,
            "DELETE FROM rejected WHERE id IN (SELECT id FROM rejected WHERE received_at < %s"
            " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)",
            (rejected_before, BATCH),
        ):
            report.rejected += n
        return report


async def _prune_events(
    conn: Connection, after: int, cutoff: float, now: float, archive: Path | None
) -> tuple[int, int, int, int, bool]:
    """The next BATCH events after id `after`: (pruned, deliveries, archive files, last id
    looked at, done)."""
    rows = await (
        await conn.execute(
            "SELECT id, received_at FROM events WHERE id > %s ORDER BY id LIMIT %s"
            " FOR UPDATE SKIP LOCKED",
            (after, BATCH),
        )
    ).fetchall()
    done = len(rows) < BATCH
    candidates = []
    for event_id, received_at in rows:
        if received_at.timestamp() >= cutoff:  # received after the cutoff: so is all after
            done = True
            break
        candidates.append(event_id)
    last_id = candidates[-1] if candidates else after
    if not candidates:
        return 0, 0, 0, last_id, True
    blocked = {
        row[0]
        for row in await (
            await conn.execute(
                "SELECT event_id FROM deliveries WHERE event_id = ANY(%s)"
                " AND NOT (state IN ('delivered', 'dropped') AND settled_at < %s)",
                (candidates, cutoff),
            )
        ).fetchall()
    }
    going = [event_id for event_id in candidates if event_id not in blocked]
    if not going:
        return 0, 0, 0, last_id, done
    files = 0
    if archive is not None:
        files = len(write_day_files(archive, await _with_deliveries(conn, going)))
    await conn.execute(
        "INSERT INTO kept_keys (key, action, pruned_at)"
        " SELECT key, action, %s FROM events WHERE id = ANY(%s)"
        " ON CONFLICT (key) DO UPDATE SET pruned_at = excluded.pruned_at",
        (now, going),
    )
    deliveries = await execute(conn, "DELETE FROM deliveries WHERE event_id = ANY(%s)", (going,))
    await conn.execute(
        "UPDATE events SET duplicate_of = NULL WHERE duplicate_of = ANY(%s)", (going,)
    )
    await conn.execute("DELETE FROM events WHERE id = ANY(%s)", (going,))
    return len(going), deliveries, files, last_id, done


async def _with_deliveries(conn: Connection, ids: list[int]) -> list[dict[str, Any]]:
    """The events as archive records, with the same values as the SQLite store's (times as
    UTC text), and their deliveries inside."""
    events = await _dicts(conn, "SELECT * FROM events WHERE id = ANY(%s) ORDER BY id", ids)
    by_event: dict[int, list[dict[str, Any]]] = {int(event["id"]): [] for event in events}
    for delivery in await _dicts(
        conn, "SELECT * FROM deliveries WHERE event_id = ANY(%s) ORDER BY id", ids
    ):
        by_event[int(delivery["event_id"])].append(delivery)
    for event in events:
        event["deliveries"] = by_event[int(event["id"])]
    return events


async def _dicts(conn: Connection, sql: str, ids: list[int]) -> list[dict[str, Any]]:
    cursor = await conn.execute(sql, (ids,))
    names = [column.name for column in cursor.description or ()]
    return [
        {name: _plain(value) for name, value in zip(names, row, strict=True)}
        for row in await cursor.fetchall()
    ]


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, date):
        return value.isoformat()
    return value
