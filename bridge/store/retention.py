"""Bounded history: old delivered events, kept keys and rejected payloads pruned when quiet.

An event may go once every one of its deliveries is in an end state an operator or a vendor
confirmed (delivered, dropped) and settled before the cutoff, and it was received before the
cutoff; nothing undelivered (pending, inflight, unmapped, held, dead) is ever deleted. Pruning
walks the events in id order, BATCH at a time, each batch one short transaction through the
group commit (archive written and fsynced first, then its keys kept, then the rows deleted),
and stops at the first event received after the cutoff, so a round never scans recent history.
The counters (migration 8) follow the deletes through their triggers.

Afterwards free pages go back to the filesystem (`PRAGMA incremental_vacuum`, on a database
created with auto_vacuum = INCREMENTAL: every database this release creates; an older one
keeps auto_vacuum = NONE and reuses its free pages for new rows, so it stops growing but does
not shrink until an offline `VACUUM`), and the WAL is checkpointed and truncated.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from bridge.store.archive import write_day_files
from bridge.store.connection import StoreBase, fetch_all
from bridge.store.records import StoreWriteError, utc_text

log = structlog.get_logger("bridge.store.retention")

BATCH = 500  # events (or rejected rows, or kept keys) per transaction
VACUUM_PAGES = 2048  # pages handed back per incremental_vacuum step (8 MiB)
DAY = 86400.0
END_STATES = ("delivered", "dropped")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    retain_days: float
    dedupe_days: float
    rejected_retain_days: float
    archive_dir: Path | None = None


@dataclass(slots=True)
class PruneReport:
    events: int = 0
    deliveries: int = 0
    keys_expired: int = 0
    rejected: int = 0
    archive_files: int = 0
    pages_freed: int = 0
    complete: bool = True  # False: stopped early because the bridge got busy

    @property
    def deleted(self) -> bool:
        return bool(self.events or self.keys_expired or self.rejected)


@dataclass(frozen=True, slots=True)
class _Batch:
    events: int
    deliveries: int
    files: int
    last_id: int  # events up to this id were looked at
    done: bool  # nothing older than the cutoff is left after last_id


class RetentionLoop:
    """The daemon's retention task, for either backend: it needs `is_quiet` and `prune`."""

    async def is_quiet(self, quiet_seconds: float) -> bool:
        raise NotImplementedError

    async def prune(
        self,
        policy: RetentionPolicy,
        *,
        now: float,
        keep_going: Callable[[], Awaitable[bool]] | None = None,
    ) -> PruneReport:
        raise NotImplementedError

    async def retain_forever(
        self,
        policy: RetentionPolicy,
        *,
        quiet_seconds: float = 5.0,
        check_seconds: float = 30.0,
        round_seconds: float = 3600.0,
    ) -> None:
        """The daemon's background task: a pruning round once the bridge has been quiet for
        `quiet_seconds` (no ingest, nothing in flight or due), at most every `round_seconds`
        once a round got through; a round that was interrupted goes on at the next quiet spell.
        """
        next_round = 0.0
        while True:
            await asyncio.sleep(check_seconds)
            try:
                if time.monotonic() < next_round or not await self.is_quiet(quiet_seconds):
                    continue
            except StoreWriteError:  # the database is away: readiness says so
                continue
            try:
                report = await self.prune(
                    policy, now=time.time(), keep_going=lambda: self.is_quiet(quiet_seconds)
                )
            except Exception:  # the loop's boundary: logged, tried again at the next check
                log.exception("retention.failed")
                continue
            if report.complete:
                next_round = time.monotonic() + round_seconds
            if report.deleted:
                log.info(
                    "retention.pruned",
                    events=report.events,
                    deliveries=report.deliveries,
                    keys_expired=report.keys_expired,
                    rejected=report.rejected,
                    archive_files=report.archive_files,
                    pages_freed=report.pages_freed,
                    complete=report.complete,
                )


class RetentionMixin(RetentionLoop, StoreBase):
    async def is_quiet(self, quiet_seconds: float) -> bool:
        """No ingest for `quiet_seconds`, nothing in flight and nothing due to be sent."""
        if time.monotonic() - self.last_ingest < quiet_seconds:
            return False
        rows = await fetch_all(self._reader, _BUSY_SQL, (time.time(),))
        return not rows

    async def prune(
        self,
        policy: RetentionPolicy,
        *,
        now: float,
        keep_going: Callable[[], Awaitable[bool]] | None = None,
    ) -> PruneReport:
        """One pruning round; `keep_going` is asked between batches (False: stop for now)."""
        report = PruneReport()
        cutoff = now - policy.retain_days * DAY
        after = 0
        while True:
            batch = await self._write(_prune_events, after, cutoff, now, policy.archive_dir)
            report.events += batch.events
            report.deliveries += batch.deliveries
            report.archive_files += batch.files
            after = batch.last_id
            if batch.done:
                break
            if keep_going is not None and not await keep_going():
                report.complete = False
                return await self._finish(report)
        keys_before = now - policy.dedupe_days * DAY
        while n := await self._write(_expire_keys, keys_before):
            report.keys_expired += n
        rejected_before = utc_text(
            datetime.fromtimestamp(now - policy.rejected_retain_days * DAY, UTC)
        )
        while n := await self._write(_expire_rejected, rejected_before):
            report.rejected += n
        return await self._finish(report)

    async def _finish(self, report: PruneReport) -> PruneReport:
        if report.deleted:
            report.pages_freed = await self.return_free_pages()
        return report

    async def return_free_pages(self) -> int:
        """Hand free pages back to the filesystem (a database with incremental auto-vacuum),
        then checkpoint the WAL and truncate it; pages handed back."""
        freed = 0
        while True:
            async with self._lock:  # between the group commit's transactions
                [[mode]] = await fetch_all(self._db, "PRAGMA auto_vacuum")
                [[free]] = await fetch_all(self._db, "PRAGMA freelist_count")
                if mode != INCREMENTAL or free == 0:
                    break
                await fetch_all(self._db, f"PRAGMA incremental_vacuum({min(free, VACUUM_PAGES)})")
                [[left]] = await fetch_all(self._db, "PRAGMA freelist_count")
            freed += free - left
            if left >= free:  # no progress (nothing to move): do not spin
                break
            await asyncio.sleep(0)  # let waiting writes in between steps
        async with self._lock:
            await fetch_all(self._db, "PRAGMA wal_checkpoint(TRUNCATE)")
        return freed


INCREMENTAL = 2  # PRAGMA auto_vacuum's answer for INCREMENTAL

# Anything in flight, or pending and due: the dispatchers are at work. A scan of the partial
# index deliveries_waiting (only undelivered rows), never of the history.
_BUSY_SQL = (
    "SELECT 1 FROM deliveries INDEXED BY deliveries_waiting"
    " WHERE state IN ('pending', 'inflight') AND (state = 'inflight' OR next_attempt_at <= ?)"
    " LIMIT 1"
)


# --- on the writer's thread, each one transaction (StoreBase._write) ---------------------------
# A set of ids goes in as one JSON array parameter: json_each(?), no SQL built from values.


def _prune_events(
    conn: sqlite3.Connection, after: int, cutoff: float, now: float, archive: Path | None
) -> _Batch:
    """The next BATCH events after id `after`: archive and delete those that may go."""
    cutoff_text = utc_text(datetime.fromtimestamp(cutoff, UTC))
    rows = conn.execute(
        "SELECT id, received_at FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, BATCH)
    ).fetchall()
    done = len(rows) < BATCH
    candidates: list[int] = []
    for event_id, received_at in rows:
        if received_at >= cutoff_text:  # received after the cutoff: so is (nearly) all after
            done = True
            break
        candidates.append(event_id)
    last_id = candidates[-1] if candidates else after
    if not candidates:
        return _Batch(0, 0, 0, last_id, done=True)
    blocked = {
        row[0]
        for row in conn.execute(
            "SELECT event_id FROM deliveries WHERE event_id IN (SELECT value FROM json_each(?))"
            " AND NOT (state IN ('delivered', 'dropped') AND settled_at < ?)",
            (json.dumps(candidates), cutoff),
        )
    }
    going = [event_id for event_id in candidates if event_id not in blocked]
    if not going:
        return _Batch(0, 0, 0, last_id, done)
    ids = json.dumps(going)
    files = 0
    if archive is not None:
        files = len(write_day_files(archive, _with_deliveries(conn, ids)))
    conn.execute(
        "INSERT INTO kept_keys (key, action, pruned_at)"
        " SELECT key, action, ? FROM events WHERE id IN (SELECT value FROM json_each(?))"
        " ON CONFLICT (key) DO UPDATE SET pruned_at = excluded.pruned_at",
        (now, ids),
    )
    deliveries = conn.execute(
        "DELETE FROM deliveries WHERE event_id IN (SELECT value FROM json_each(?))", (ids,)
    ).rowcount
    conn.execute("DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))", (ids,))
    return _Batch(len(going), deliveries, files, last_id, done)


def _with_deliveries(conn: sqlite3.Connection, ids: str) -> list[dict[str, Any]]:
    """The events `ids` (a JSON array) as archive records: every column, and their
    deliveries with their outcomes."""
    events = _dicts(
        conn.execute(
            "SELECT * FROM events WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (ids,),
        )
    )
    by_event: dict[int, list[dict[str, Any]]] = {int(event["id"]): [] for event in events}
    deliveries = conn.execute(
        "SELECT * FROM deliveries WHERE event_id IN (SELECT value FROM json_each(?)) ORDER BY id",
        (ids,),
    )
    for delivery in _dicts(deliveries):
        by_event[int(delivery["event_id"])].append(delivery)
    for event in events:
        event["deliveries"] = by_event[int(event["id"])]
    return events


def _dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _expire_keys(conn: sqlite3.Connection, before: float) -> int:
    """Forget up to BATCH kept keys pruned before `before`; how many."""
    return conn.execute(
        "DELETE FROM kept_keys WHERE key IN"
        " (SELECT key FROM kept_keys WHERE pruned_at < ? ORDER BY pruned_at LIMIT ?)",
        (before, BATCH),
    ).rowcount


def _expire_rejected(conn: sqlite3.Connection, before: str) -> int:
    """Delete up to BATCH of the oldest rejected payloads received before `before` (UTC text),
    and take their footprints off the running total of the cap (rejected_budget)."""
    rows = conn.execute(
        "SELECT id, received_at, footprint FROM rejected ORDER BY id LIMIT ?", (BATCH,)
    )
    ids, freed = [], 0
    for row_id, received_at, size in rows.fetchall():
        if received_at >= before:
            break
        ids.append(row_id)
        freed += size
    if not ids:
        return 0
    conn.execute("DELETE FROM rejected WHERE id <= ?", (ids[-1],))
    conn.execute(
        "UPDATE rejected_budget SET stored_bytes = stored_bytes - ? WHERE id = 1", (freed,)
    )
    return len(ids)
