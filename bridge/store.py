"""The durable queue: the only module that touches SQLite (through aiosqlite).

Every write runs in one `BEGIN IMMEDIATE` transaction behind an asyncio.Lock, because the one
shared connection would otherwise interleave statements of different coroutines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiosqlite

from bridge.events import Action, ClockEvent
from bridge.inference import infer_action
from bridge.schema import MIGRATIONS
from bridge.sinks.base import Job, Outcome, Result

# Who a person is at each sink; None where the directory does not know them (yet).
PersonResolver = Callable[[ClockEvent], Mapping[str, str | None]]


class StoreError(Exception):
    """The database cannot be used (not SQLite, failed integrity check, newer schema)."""


class StoreWriteError(Exception):
    """A write failed (disk full, I/O error); nothing of it was committed. Try again later."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """A parsed event to store, with the topic it came on."""

    event: ClockEvent
    topic: str
    sinks: frozenset[str] | None = None  # the subscription's routing; None: every sink
    format: str = "canonical"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A payload that could not become an event: kept whole, with the reason."""

    topic: str
    format: str
    payload: bytes
    reason: str
    received_at: datetime
    terminal: str = ""  # as far as the topic tells


@dataclass(frozen=True, slots=True)
class Stored:
    """What became of one incoming message."""

    key: str
    status: str  # accepted | unmapped | duplicate | redelivered | rejected
    action: Action | None = None
    terminal: str | None = None
    reason: str | None = None


def utc_text(moment: datetime) -> str:
    """Fixed-width UTC text, so that string order is time order in SQL."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc_text(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script, comments dropped (a ';' in a comment is harmless)."""
    code = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return [part.strip() for part in code.split(";") if part.strip()]


_CLAIM_SQL = """
UPDATE deliveries SET state = 'inflight', attempts = attempts + 1
WHERE id IN (
    SELECT d.id FROM deliveries AS d
    WHERE d.sink = :sink AND d.state = 'pending' AND d.next_attempt_at <= :now
      -- per person, only the oldest undelivered punch may go, and only one at a time
      AND NOT EXISTS (
          SELECT 1 FROM deliveries AS e
          WHERE e.sink = d.sink AND e.person = d.person AND e.id != d.id
            AND (e.state = 'inflight'
                 OR (e.state = 'pending' AND (e.event_time < d.event_time
                     OR (e.event_time = d.event_time AND e.id < d.id)))))
    ORDER BY d.next_attempt_at, d.event_time
    LIMIT :limit)
RETURNING id
"""

_JOB_SQL = """
SELECT d.id, d.sink, d.person, d.attempts, d.created_at, e.key, e.source_id, e.action, e.event_time, e.terminal,
       e.job, e.lat, e.lon, e.note, p.state
FROM deliveries AS d JOIN events AS e ON e.id = d.event_id
LEFT JOIN person_state AS p ON p.sink = d.sink AND p.person = d.person
WHERE d.id = ?
"""


class Store:
    def __init__(self, db: aiosqlite.Connection, *, site_tz: ZoneInfo, window_seconds: float):
        self._db = db
        self._lock = asyncio.Lock()
        self._site_tz = site_tz
        self._window = window_seconds
        # The last write that failed (disk full, I/O error) and since when; None once one works.
        self.write_error: tuple[str, float] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, path: Path, *, site_tz: ZoneInfo, window_seconds: float = 60.0
    ) -> AsyncIterator[Store]:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            db.row_factory = aiosqlite.Row
            store = cls(db, site_tz=site_tz, window_seconds=window_seconds)
            await store._check_integrity(path)
            await db.execute("PRAGMA busy_timeout = 10000")
            await db.execute("PRAGMA journal_mode = WAL")
            # FULL: an event is acknowledged to the broker after its commit, so that commit
            # must survive a power cut.
            await db.execute("PRAGMA synchronous = FULL")
            await store._migrate()
            yield store
        finally:
            await db.close()

    async def _check_integrity(self, path: Path) -> None:
        try:
            rows = await self._db.execute_fetchall("PRAGMA quick_check")
        except aiosqlite.DatabaseError as err:
            msg = f"{path} is not a usable SQLite database ({err}); it was left untouched"
            raise StoreError(msg) from None
        verdict = [row[0] for row in rows]
        if verdict != ["ok"]:
            msg = f"{path} fails the integrity check ({'; '.join(verdict[:3])}); left untouched"
            raise StoreError(msg)

    async def _migrate(self) -> None:
        rows = await self._db.execute_fetchall("PRAGMA user_version")
        version = rows[0][0]
        if version > len(MIGRATIONS):
            msg = f"database schema {version} is newer than this release knows ({len(MIGRATIONS)})"
            raise StoreError(msg)
        for number in range(version, len(MIGRATIONS)):
            async with self._transaction() as db:
                for statement in _split_sql(MIGRATIONS[number]):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {number + 1}")

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:
                        await asyncio.shield(self._db.execute("ROLLBACK"))
                    raise
                await asyncio.shield(self._db.execute("COMMIT"))
            except aiosqlite.OperationalError as err:
                if self.write_error is None:
                    self.write_error = (str(err), time.time())
                raise StoreWriteError(str(err)) from err
            self.write_error = None

    # --- ingest ----------------------------------------------------------------------------

    async def ingest(
        self,
        batch: Sequence[Incoming | Rejection],
        *,
        resolve: PersonResolver,
        received_at: datetime,
    ) -> list[Stored]:
        """Store a batch in one transaction (group commit); results in arrival order."""
        results: list[Stored] = []
        async with self._transaction() as db:
            for item in batch:
                if isinstance(item, Rejection):
                    results.append(await self._insert_rejection(db, item))
                else:
                    results.append(await self._insert_event(db, item, resolve, received_at))
        return results

    async def _insert_rejection(self, db: aiosqlite.Connection, item: Rejection) -> Stored:
        await db.execute(
            "INSERT INTO rejected (received_at, topic, format, payload, payload_size, reason)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                utc_text(item.received_at),
                item.topic,
                item.format,
                item.payload[:65536],  # more than the 16 KiB limit, enough to inspect
                len(item.payload),
                item.reason,
            ),
        )
        return Stored(key="", status="rejected", terminal=item.terminal, reason=item.reason)

    async def _insert_event(
        self,
        db: aiosqlite.Connection,
        item: Incoming,
        resolve: PersonResolver,
        received_at: datetime,
    ) -> Stored:
        event = item.event
        rows = await db.execute_fetchall("SELECT action FROM events WHERE key = ?", (event.key,))
        if rows:  # layer 1: the same event again (MQTT redelivery, a terminal resending)
            return Stored(event.key, "redelivered", Action(rows[0][0]), event.terminal)

        when = utc_text(event.time)
        local_day = event.time.astimezone(self._site_tz).date().isoformat()
        action = event.action
        if action is None:
            action = infer_action(
                await self._previous(db, event.subject, local_day, when),
                at=event.time,
                window_seconds=self._window,
            )
        duplicate_of = await self._double_swipe(db, event.subject, action, event.time)
        people = {} if duplicate_of is not None else dict(resolve(event))
        if item.sinks is not None:
            people = {sink: who for sink, who in people.items() if sink in item.sinks}
        if duplicate_of is not None:
            status = "duplicate"
        elif all(person is not None for person in people.values()):
            status = "accepted"
        else:
            status = "unmapped"

        cursor = await db.execute(
            "INSERT INTO events (key, terminal, subject, badge, user_id, action, action_inferred,"
            " event_time, local_day, time_given, received_at, status, duplicate_of, topic,"
            " job, lat, lon, note, source_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                event.key, event.terminal, event.subject, event.badge, event.user, action.value,
                event.action is None, when, local_day, event.time_given, utc_text(received_at),
                status, duplicate_of, item.topic, event.job, event.lat, event.lon, event.note,
                event.source_id,
            ),
        )
        event_id = cursor.lastrowid
        now = time.time()
        await db.executemany(
            "INSERT INTO deliveries (event_id, sink, person, event_time, state, next_attempt_at,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (event_id, sink, person, when, "pending" if person else "unmapped", now, now)
                for sink, person in people.items()
            ],
        )
        reason = "double swipe" if duplicate_of is not None else None
        return Stored(event.key, status, action, event.terminal, reason)

    async def _previous(
        self, db: aiosqlite.Connection, subject: str, local_day: str, when: str
    ) -> tuple[Action, datetime] | None:
        rows = await db.execute_fetchall(
            "SELECT action, event_time FROM events WHERE subject = ? AND local_day = ?"
            " AND event_time <= ? AND status != 'duplicate'"
            " ORDER BY event_time DESC, id DESC LIMIT 1",
            (subject, local_day, when),
        )
        if not rows:
            return None
        return Action(rows[0][0]), parse_utc_text(rows[0][1])

    async def _double_swipe(
        self, db: aiosqlite.Connection, subject: str, action: Action, at: datetime
    ) -> int | None:
        """Layer 2: the same person, the same action, within the window: the id it repeats."""
        window = timedelta(seconds=self._window)
        rows = await db.execute_fetchall(
            "SELECT id FROM events WHERE subject = ? AND action = ? AND status != 'duplicate'"
            " AND event_time BETWEEN ? AND ? ORDER BY event_time LIMIT 1",
            (subject, action.value, utc_text(at - window), utc_text(at + window)),
        )
        return rows[0][0] if rows else None

    async def release_unmapped(self, *, resolve: PersonResolver) -> int:
        """Give unmapped deliveries their person once the directory knows them; count released."""
        rows = await self._db.execute_fetchall(
            "SELECT d.id, d.sink, e.key, e.terminal, e.badge, e.user_id, e.action, e.event_time"
            " FROM deliveries AS d JOIN events AS e ON e.id = d.event_id"
            " WHERE d.state = 'unmapped'"
        )
        updates = []
        for row in rows:
            event = ClockEvent(
                key=row["key"], terminal=row["terminal"], badge=row["badge"],
                user=row["user_id"], action=Action(row["action"]),
                time=parse_utc_text(row["event_time"]), time_given=True,
            )
            person = resolve(event).get(row["sink"])
            if person is not None:
                updates.append((person, time.time(), row["id"]))
        if not updates:
            return 0
        async with self._transaction() as db:
            await db.executemany(
                "UPDATE deliveries SET person = ?, state = 'pending', next_attempt_at = ?"
                " WHERE id = ? AND state = 'unmapped'",
                updates,
            )
            await db.execute(
                "UPDATE events SET status = 'accepted' WHERE status = 'unmapped' AND NOT EXISTS"
                " (SELECT 1 FROM deliveries AS d WHERE d.event_id = events.id"
                " AND d.state = 'unmapped')"
            )
        return len(updates)

    # --- dispatch --------------------------------------------------------------------------

    async def recover_inflight(self) -> int:
        """At start: deliveries a crashed or killed run had in hand go out again."""
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE deliveries SET state = 'pending', next_attempt_at = ?"
                " WHERE state = 'inflight'",
                (time.time(),),
            )
            return cursor.rowcount

    async def claim(self, sink: str, *, limit: int, now: float) -> list[Job]:
        """Claim due deliveries (the attempt is counted now, so a crash still uses one up)."""
        async with self._transaction() as db:
            rows = await db.execute_fetchall(_CLAIM_SQL, {"sink": sink, "now": now, "limit": limit})
            jobs = [await self._job(db, row[0]) for row in rows]
        return sorted(jobs, key=lambda job: (job.time, job.delivery_id))

    async def _job(self, db: aiosqlite.Connection, delivery_id: int) -> Job:
        rows = await db.execute_fetchall(_JOB_SQL, (delivery_id,))
        row = rows[0]
        return Job(
            delivery_id=row["id"], event_key=row["key"], sink=row["sink"], person=row["person"],
            action=Action(row["action"]), time=parse_utc_text(row["event_time"]),
            terminal=row["terminal"], attempt=row["attempts"], job=row["job"], lat=row["lat"],
            lon=row["lon"], note=row["note"], state=json.loads(row["state"] or "{}"),
            stored_at=row["created_at"], source_id=row["source_id"],
        )

    async def settle(self, job: Job, result: Result, *, retry_at: float, now: float) -> str:
        """Record a send's result; return the delivery's new state."""
        detail = result.detail[:500] or None
        async with self._transaction() as db:
            if result.state is not None:
                await db.execute(
                    "INSERT INTO person_state (sink, person, state, updated_at) VALUES (?,?,?,?)"
                    " ON CONFLICT (sink, person) DO UPDATE SET state = excluded.state,"
                    " updated_at = excluded.updated_at",
                    (job.sink, job.person, json.dumps(dict(result.state)), now),
                )
            if result.outcome in (Outcome.DELIVERED, Outcome.DUPLICATE):
                await db.execute(
                    "UPDATE deliveries SET state = 'delivered', outcome = ?, settled_at = ?,"
                    " last_error = NULL WHERE id = ?",
                    (result.outcome.value, now, job.delivery_id),
                )
                return "delivered"
            if result.outcome is Outcome.PERMANENT_FAILURE:
                return await self._dead(db, job, detail, now)
            if result.outcome is Outcome.HELD:
                # Waits for an operator (complete or drop); does not block later punches.
                await db.execute(
                    "UPDATE deliveries SET state = 'held', settled_at = ?, last_error = ?"
                    " WHERE id = ?",
                    (now, detail, job.delivery_id),
                )
                return "held"
            if result.outcome is Outcome.PAUSED:
                # Not the event's fault: give the attempt back and keep it first in line.
                await db.execute(
                    "UPDATE deliveries SET state = 'pending', attempts = attempts - 1,"
                    " next_attempt_at = ?, last_error = ? WHERE id = ?",
                    (now, detail, job.delivery_id),
                )
                return "pending"
            await db.execute(
                "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, last_error = ?"
                " WHERE id = ?",
                (retry_at, detail, job.delivery_id),
            )
            return "pending"

    async def _dead(
        self, db: aiosqlite.Connection, job: Job, detail: str | None, now: float
    ) -> str:
        await db.execute(
            "UPDATE deliveries SET state = 'dead', settled_at = ?, last_error = ? WHERE id = ?",
            (now, detail, job.delivery_id),
        )
        return "dead"

    async def expire(self, job: Job, *, now: float, max_age_days: float) -> bool:
        """Kill a delivery whose event is older than the retry age limit; True when it was."""
        if (datetime.fromtimestamp(now, UTC) - job.time).total_seconds() <= max_age_days * 86400:
            return False
        async with self._transaction() as db:
            await self._dead(db, job, f"gave up: event older than {max_age_days:g} days", now)
        return True

    async def next_due(self, sink: str) -> float | None:
        rows = await self._db.execute_fetchall(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE sink = ? AND state = 'pending'",
            (sink,),
        )
        return rows[0][0]

    # --- inspection ------------------------------------------------------------------------

    async def recent_events(self, limit: int = 20) -> list[dict[str, object]]:
        rows = await self._db.execute_fetchall(
            "SELECT key, terminal, subject, action, event_time, status FROM events"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [dict(row) for row in rows]

    async def recent_errors(self, limit: int = 10) -> list[dict[str, object]]:
        rows = await self._db.execute_fetchall(
            "SELECT d.sink, d.state, d.attempts, d.last_error, e.key FROM deliveries AS d"
            " JOIN events AS e ON e.id = d.event_id WHERE d.last_error IS NOT NULL"
            " AND d.state IN ('pending', 'dead', 'held') ORDER BY d.id DESC LIMIT ?",
            (limit,),
        )
        return [dict(row) for row in rows]

    async def status(self, *, now: float) -> dict[str, object]:
        sinks: dict[str, dict[str, object]] = {}
        for row in await self._db.execute_fetchall(
            "SELECT sink, state, COUNT(*), MIN(created_at) FROM deliveries GROUP BY sink, state"
        ):
            entry = sinks.setdefault(row[0], {"states": {}, "oldest_pending_seconds": None})
            entry["states"][row[1]] = row[2]  # type: ignore[index]
            if row[1] in ("pending", "inflight"):
                age = now - row[3]
                previous = entry["oldest_pending_seconds"]
                entry["oldest_pending_seconds"] = max(age, previous or 0.0)
        events = {
            row[0]: row[1]
            for row in await self._db.execute_fetchall(
                "SELECT status, COUNT(*) FROM events GROUP BY status"
            )
        }
        rejected = (await self._db.execute_fetchall("SELECT COUNT(*) FROM rejected"))[0][0]
        retried = (
            await self._db.execute_fetchall(
                "SELECT COUNT(*) FROM deliveries WHERE attempts > 1"
            )
        )[0][0]
        return {"events": events, "rejected": rejected, "retried": retried, "sinks": sinks}
