"""Ingest: store a batch of events in one transaction, with duplicate layers 1 and 2."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from bridge.delivery import DeliveryState, EventStatus
from bridge.events import Action, ImplausibleTime
from bridge.store.connection import StoreBase, fetch_all
from bridge.store.queue import SINKS_WITH_DELIVERIES
from bridge.store.records import (
    GroupResolver,
    Incoming,
    PersonResolver,
    Rejection,
    Stored,
    Swiper,
    parse_utc_text,
    utc_text,
)
from bridge.store.rejected import insert_rejection


class IntakeMixin(StoreBase):
    async def ingest(
        self,
        batch: Sequence[Incoming | Rejection],
        *,
        resolve: PersonResolver,
        received_at: datetime,
        group_of: GroupResolver | None = None,
    ) -> list[Stored]:
        """Store a batch in one transaction (group commit); results in arrival order.

        Who each event is at each sink (and the person's schedule group, for inference) is
        looked up here, on the event loop, before the write: the transaction only reads and
        writes rows."""
        results, stored = await self.ingest_now(
            batch, resolve=resolve, received_at=received_at, group_of=group_of
        )
        await stored
        return results

    async def ingest_now(
        self,
        batch: Sequence[Incoming | Rejection],
        *,
        resolve: PersonResolver,
        received_at: datetime,
        group_of: GroupResolver | None = None,
    ) -> tuple[list[Stored], asyncio.Future[None]]:
        """As `ingest`, but answer as soon as the batch is written in the open transaction
        (store.commit_wait_seconds), with what completes once it is committed and flushed."""
        self.last_ingest = time.monotonic()  # retention waits for a quiet spell
        resolved = [_resolved(item, resolve, group_of, received_at) for item in batch]
        results, stored = await self._write_now(self._ingest_batch, resolved, received_at)
        if any(stored.status in (EventStatus.ACCEPTED, EventStatus.UNMAPPED) for stored in results):
            # (an unmapped event may still be due at another sink)
            stored.add_done_callback(self._notify_if_committed)
        return results, stored

    def _notify_if_committed(self, stored: asyncio.Future[None]) -> None:
        if not stored.cancelled() and stored.exception() is None:
            self.work.notify()

    def _ingest_batch(
        self,
        conn: sqlite3.Connection,
        batch: Sequence[Incoming | Rejection],
        received_at: datetime,
    ) -> list[Stored]:
        # Runs on the connection's thread, inside the transaction (StoreBase._write).
        conn.execute("SAVEPOINT batch")
        try:
            stored = [self._store_one(conn, item, received_at) for item in batch]
        except Exception as err:
            conn.execute("ROLLBACK TO batch")
            conn.execute("RELEASE batch")
            if _is_database_failure(err):
                raise
            # One message the rules could not handle (a time at the edge of the calendar, a
            # value the driver refuses): store the batch again one message at a time, so that
            # only that one is rejected and the rest are stored and acknowledged.
            return [self._store_isolated(conn, item, received_at) for item in batch]
        conn.execute("RELEASE batch")
        return stored

    def _store_one(
        self, conn: sqlite3.Connection, item: Incoming | Rejection, received_at: datetime
    ) -> Stored:
        if isinstance(item, Rejection):
            return insert_rejection(conn, item)
        return self._insert_event(conn, item, received_at)

    def _store_isolated(
        self, conn: sqlite3.Connection, item: Incoming | Rejection, received_at: datetime
    ) -> Stored:
        """Store one message in a savepoint of its own; what fails becomes a rejected row."""
        conn.execute("SAVEPOINT item")
        try:
            stored = self._store_one(conn, item, received_at)
        except Exception as err:
            conn.execute("ROLLBACK TO item")
            conn.execute("RELEASE item")
            if _is_database_failure(err):
                raise
            return insert_rejection(conn, _as_rejection(item, err, received_at))
        conn.execute("RELEASE item")
        return stored

    def _insert_event(
        self, conn: sqlite3.Connection, item: Incoming, received_at: datetime
    ) -> Stored:
        event = item.event
        row = conn.execute("SELECT action FROM events WHERE key = ?", (event.key,)).fetchone()
        if row is None:  # or of an event pruned since (bridge.store.retention)
            row = conn.execute(
                "SELECT action FROM kept_keys WHERE key = ?", (event.key,)
            ).fetchone()
        if row:  # layer 1: the same event again (MQTT redelivery, a terminal resending)
            return Stored(event.key, EventStatus.REDELIVERED, Action(row[0]), event.terminal)

        when = utc_text(event.time)
        local_day = event.time.astimezone(self._site_tz).date().isoformat()
        if item.held is not None:
            return self._insert_held(conn, item, item.held, received_at, local_day)
        action = event.action
        if action is None:
            # Read and decided inside this write transaction, on purpose: no other writer can
            # store the person's next swipe between the read of the previous one and this
            # insert (two writers inferring from the same stale previous would both toggle
            # the same way), and an earlier event of this same batch already counts.
            since = self._inference.lookback(event.time, event.terminal, item.group)
            action = self._inference.infer(
                previous_swipe(conn, event.subject, since, when),
                at=event.time,
                terminal=event.terminal,
                group=item.group,
            )
        duplicate_of = double_swipe_of(conn, event.subject, action, event.time, self._window)
        held_because = None
        if duplicate_of is None:
            held_because = self._would_change_a_decided_direction(conn, item, action, when)
        people = {} if duplicate_of is not None else dict(item.people or {})
        if item.sinks is not None:
            people = {sink: who for sink, who in people.items() if sink in item.sinks}
        if duplicate_of is not None:
            status = EventStatus.DUPLICATE
        elif all(person is not None for person in people.values()):
            status = EventStatus.ACCEPTED
        else:
            status = EventStatus.UNMAPPED

        event_id = _insert_event_row(
            conn,
            item,
            when=when,
            action=action,
            local_day=local_day,
            status=status,
            duplicate_of=duplicate_of,
            received_at=received_at,
        )
        now = time.time()
        if held_because is not None:
            conn.executemany(
                "INSERT INTO deliveries (event_id, sink, person, event_time, state,"
                " next_attempt_at, created_at, settled_at, last_error)"
                " VALUES (?, ?, ?, ?, 'held', ?, ?, ?, ?)",
                [
                    (event_id, sink, person, when, now, now, now, held_because)
                    for sink, person in people.items()
                ],
            )
            return Stored(
                event.key, status, action, event.terminal, held_because, held=tuple(people)
            )
        due = now + self._settle_seconds  # near-simultaneous arrivals sort by event time first
        conn.executemany(
            "INSERT INTO deliveries (event_id, sink, person, event_time, state, next_attempt_at,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (event_id, sink, person, when, _first_state(person), due, now)
                for sink, person in people.items()
            ],
        )
        reason = "double swipe" if duplicate_of is not None else None
        return Stored(event.key, status, action, event.terminal, reason)

    def _would_change_a_decided_direction(
        self, conn: sqlite3.Connection, item: Incoming, action: Action, when: str
    ) -> str | None:
        """Why this late swipe must wait for an operator (InferenceRules.late_swipe_problem),
        if it does."""
        later = _next_swipe(conn, item.event.subject, when)
        if later is None:
            return None
        return self._inference.late_swipe_problem(
            action, at=item.event.time, group=item.group, later=later
        )

    def _insert_held(
        self,
        conn: sqlite3.Connection,
        item: Incoming,
        held: ImplausibleTime,
        received_at: datetime,
        local_day: str,
    ) -> Stored:
        """An event whose device time is implausible: stored (so a resend is a duplicate) with
        every delivery held, the reason naming both clocks. Its time decides nothing yet: no
        inference (the action is decided again when an operator gives it a time), no double
        swipe, and it is nobody's previous swipe (status 'held')."""
        event = item.event
        people = dict(item.people or {})
        if item.sinks is not None:
            people = {sink: who for sink, who in people.items() if sink in item.sinks}
        # A placeholder for a swipe without an action (the column is NOT NULL); flagged
        # inferred, so `held complete --use-received-time` infers it at the received time.
        action = event.action or Action.IN
        when = utc_text(event.time)
        event_id = _insert_event_row(
            conn,
            item,
            when=when,
            action=action,
            local_day=local_day,
            status=EventStatus.HELD,
            duplicate_of=None,
            received_at=received_at,
        )
        now = time.time()
        conn.executemany(
            "INSERT INTO deliveries (event_id, sink, person, event_time, state, next_attempt_at,"
            " created_at, settled_at, last_error) VALUES (?, ?, ?, ?, 'held', ?, ?, ?, ?)",
            [
                (event_id, sink, person, when, now, now, now, held.reason)
                for sink, person in people.items()
            ],
        )
        return Stored(event.key, EventStatus.HELD, None, event.terminal, held.reason)

    async def release_unmapped(self, *, resolve: PersonResolver) -> int:
        """Give unmapped deliveries their person once the directory knows them; count released."""
        rows = await fetch_all(
            self._db,
            "SELECT d.id, d.sink, e.badge, e.user_id"
            " FROM deliveries AS d JOIN events AS e ON e.id = d.event_id"
            f" WHERE d.sink IN ({SINKS_WITH_DELIVERIES}) AND d.state = 'unmapped'",
        )
        updates = []
        for row in rows:
            who = Swiper(badge=row["badge"], user=row["user_id"])
            person = resolve(who).get(row["sink"])
            if person is not None:
                updates.append((person, time.time(), row["id"]))
        if not updates:
            return 0
        await self._write(_release, updates)
        self.work.notify()
        return len(updates)


def _release(conn: sqlite3.Connection, updates: list[tuple[str, float, int]]) -> None:
    conn.executemany(
        "UPDATE deliveries SET person = ?, state = 'pending', next_attempt_at = ?"
        " WHERE id = ? AND state = 'unmapped'",
        updates,
    )
    conn.execute(
        "UPDATE events SET status = 'accepted' WHERE status = 'unmapped' AND NOT EXISTS"
        " (SELECT 1 FROM deliveries AS d WHERE d.event_id = events.id"
        " AND d.state = 'unmapped')"
    )


def _resolved(
    item: Incoming | Rejection,
    resolve: PersonResolver,
    group_of: GroupResolver | None,
    received_at: datetime,
) -> Incoming | Rejection:
    """The event with its person at each sink and their schedule group; a directory that
    cannot answer for it makes it a rejected row like any other message that cannot be
    stored."""
    if isinstance(item, Rejection):
        return item
    try:
        people = dict(resolve(item.event))
        group = None if group_of is None else group_of(item.event)
    except Exception as err:  # noqa: BLE001 - the per-message guarantee: never stop the batch
        return _as_rejection(item, err, received_at)
    return dataclasses.replace(item, people=people, group=group)


def _first_state(person: str | None) -> DeliveryState:
    return DeliveryState.PENDING if person else DeliveryState.UNMAPPED


def _is_database_failure(err: Exception) -> bool:
    """The database itself failed (disk full, I/O, corruption), not one message's values: then
    nothing is stored and nothing acknowledged, and the broker keeps the messages."""
    if isinstance(err, sqlite3.OperationalError | sqlite3.InternalError | MemoryError):
        return True
    return type(err) is sqlite3.DatabaseError  # "database disk image is malformed"


def _as_rejection(item: Incoming | Rejection, err: Exception, received_at: datetime) -> Rejection:
    """What to keep of a message that could not be stored: everything, with printable text
    (a topic or reason the driver refused, e.g. a lone surrogate, is escaped)."""
    reason = f"could not be stored ({type(err).__name__}: {str(err)[:200]})"
    if isinstance(item, Rejection):
        topic, fmt, payload, terminal = item.topic, item.format, item.payload, item.terminal
        reason = f"{item.reason}; {reason}"
    else:
        topic, fmt, payload, terminal = item.topic, item.format, item.payload, item.event.terminal
    return Rejection(
        topic=_printable(topic),
        format=fmt,
        payload=payload,
        reason=_printable(reason),
        received_at=received_at,
        terminal=_printable(terminal),
    )


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _insert_event_row(
    conn: sqlite3.Connection,
    item: Incoming,
    *,
    when: str,
    action: Action,
    local_day: str,
    status: EventStatus,
    duplicate_of: int | None,
    received_at: datetime,
) -> int:
    event = item.event
    cursor = conn.execute(
        "INSERT INTO events (key, terminal, subject, badge, user_id, action, action_inferred,"
        " event_time, local_day, time_given, received_at, status, duplicate_of, topic,"
        " job, lat, lon, note, source_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            event.key,
            event.terminal,
            event.subject,
            event.badge,
            event.user,
            action.value,
            event.action is None,
            when,
            local_day,
            event.time_given,
            utc_text(received_at),
            status,
            duplicate_of,
            item.topic,
            event.job,
            event.lat,
            event.lon,
            event.note,
            event.source_id,
        ),
    )
    return int(cursor.lastrowid or 0)


# Events no later swipe is decided by: double swipes, and events held for their device time.
_NOT_A_SWIPE = "status NOT IN ('duplicate', 'held')"


def previous_swipe(
    conn: sqlite3.Connection, subject: str, since: datetime, when: str
) -> tuple[Action, datetime] | None:
    """The person's latest event from `since` up to `when`, for in/out inference (by shift:
    the calendar day, `local_day`, plays no part)."""
    row = conn.execute(
        "SELECT action, event_time FROM events WHERE subject = ? AND event_time >= ?"
        f" AND event_time <= ? AND {_NOT_A_SWIPE}"
        " ORDER BY event_time DESC, id DESC LIMIT 1",
        (subject, utc_text(since), when),
    ).fetchone()

    return None if row is None else (Action(row[0]), parse_utc_text(row[1]))


def _next_swipe(
    conn: sqlite3.Connection, subject: str, when: str
) -> tuple[Action, datetime, str] | None:
    """The person's next swipe after `when` whose direction was inferred (action, time,
    terminal); None when the next one came with its own action, or there is none."""
    row = conn.execute(
        "SELECT action, event_time, terminal, action_inferred FROM events"
        f" WHERE subject = ? AND event_time > ? AND {_NOT_A_SWIPE}"
        " ORDER BY event_time, id LIMIT 1",
        (subject, when),
    ).fetchone()
    if row is None or not row[3]:
        return None
    return Action(row[0]), parse_utc_text(row[1]), row[2]


def double_swipe_of(
    conn: sqlite3.Connection, subject: str, action: Action, at: datetime, window_seconds: float
) -> int | None:
    """Layer 2: the same person, the same action, within the window: the id it repeats."""
    window = timedelta(seconds=window_seconds)
    row = conn.execute(
        f"SELECT id FROM events WHERE subject = ? AND action = ? AND {_NOT_A_SWIPE}"
        " AND event_time BETWEEN ? AND ? ORDER BY event_time LIMIT 1",
        (subject, action.value, utc_text(at - window), utc_text(at + window)),
    ).fetchone()
    return None if row is None else int(row[0])
