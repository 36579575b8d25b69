"""Ingest on PostgreSQL: the SQLite store's rules (bridge.store.intake), for several writers.

A batch is one transaction. Before it reads anything, it takes a transaction-level advisory lock
per person in the batch (in a fixed order, so two instances never deadlock): duplicate layer 2,
inference and the late-swipe check read the person's earlier swipes, and two instances storing
the same person's swipes at once would otherwise both decide from the same stale previous one.
Layer 1 is the unique key (`ON CONFLICT DO NOTHING`). Each message has a savepoint of its own:
one that fails for its values becomes a rejected row, the rest are stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from datetime import datetime, timedelta
from typing import Any

from psycopg import errors

from bridge.delivery import DeliveryState, EventStatus
from bridge.events import Action
from bridge.store.intake import _as_rejection, _resolved
from bridge.store.postgres.connection import Connection, PostgresBase
from bridge.store.postgres.rejected import insert_rejection
from bridge.store.records import (
    GroupResolver,
    Incoming,
    PersonResolver,
    Rejection,
    Stored,
    Swiper,
)


class PostgresIntake(PostgresBase):
    async def ingest(
        self,
        batch: Sequence[Incoming | Rejection],
        *,
        resolve: PersonResolver,
        received_at: datetime,
        group_of: GroupResolver | None = None,
    ) -> list[Stored]:
        """Store a batch in one transaction; results in arrival order (Store.ingest)."""
        self.last_ingest = time.monotonic()
        resolved = [_resolved(item, resolve, group_of, received_at) for item in batch]
        results = await self._transaction(self._ingest_batch, resolved, received_at)
        if any(stored.status in (EventStatus.ACCEPTED, EventStatus.UNMAPPED) for stored in results):
            self.work.notify()
        return results

    async def ingest_now(
        self,
        batch: Sequence[Incoming | Rejection],
        *,
        resolve: PersonResolver,
        received_at: datetime,
        group_of: GroupResolver | None = None,
    ) -> tuple[list[Stored], Awaitable[None]]:
        """Store.ingest_now: here each batch is committed before its answer."""
        results = await self.ingest(
            batch, resolve=resolve, received_at=received_at, group_of=group_of
        )
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return results, done

    def commit_soon(self) -> None:
        """Nothing waits to be committed: each transaction commits at once."""

    async def release_unmapped(self, *, resolve: PersonResolver) -> int:
        """Give unmapped deliveries their person once the directory knows them (Store's)."""
        async with self._reading() as conn:
            rows = await (
                await conn.execute(
                    "SELECT d.id, d.sink, e.badge, e.user_id FROM deliveries AS d"
                    " JOIN events AS e ON e.id = d.event_id WHERE d.state = 'unmapped'"
                )
            ).fetchall()
        now = time.time()
        updates = []
        for delivery_id, sink, badge, user in rows:
            person = resolve(Swiper(badge=badge, user=user)).get(sink)
            if person is not None:
                updates.append((person, now, delivery_id))
        if not updates:
            return 0
        await self._transaction(_release, updates)
        self.work.notify()
        return len(updates)

    async def _ingest_batch(
        self, conn: Connection, batch: Sequence[Incoming | Rejection], received_at: datetime
    ) -> list[Stored]:
        subjects = sorted({item.event.subject for item in batch if isinstance(item, Incoming)})
        for subject in subjects:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (subject,))
        return [await self._store_isolated(conn, item, received_at) for item in batch]

    async def _store_isolated(
        self, conn: Connection, item: Incoming | Rejection, received_at: datetime
    ) -> Stored:
        if isinstance(item, Rejection):
            return await insert_rejection(conn, item)
        try:
            async with conn.transaction():  # a savepoint
                return await self._insert_event(conn, item, received_at)
        except (errors.DataError, errors.IntegrityError, ValueError, OverflowError) as err:
            return await insert_rejection(conn, _as_rejection(item, err, received_at))

    async def _insert_event(
        self, conn: Connection, item: Incoming, received_at: datetime
    ) -> Stored:
        event = item.event
        known = await _fetch_one(
            conn,
            "SELECT action FROM events WHERE key = %s UNION ALL"
            " SELECT action FROM kept_keys WHERE key = %s LIMIT 1",
            (event.key, event.key),
        )
        if known is not None:  # layer 1: the same event again
            return Stored(event.key, EventStatus.REDELIVERED, Action(known[0]), event.terminal)
        action, status, duplicate_of, held_because, people = await self._decide(conn, item)
        row = await _fetch_one(
            conn,
            "INSERT INTO events (key, terminal, subject, badge, user_id, action, action_inferred,"
            " event_time, local_day, time_given, received_at, status, duplicate_of, topic, job,"
            " lat, lon, note, source_id) VALUES"
            " (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT (key) DO NOTHING RETURNING id",
            (
                event.key,
                event.terminal,
                event.subject,
                event.badge,
                event.user,
                action.value,
                event.action is None,
                event.time,
                event.time.astimezone(self._site_tz).date(),
                event.time_given,
                received_at,
                status.value,
                duplicate_of,
                item.topic,
                event.job,
                event.lat,
                event.lon,
                event.note,
                event.source_id,
            ),
        )
        if row is None:  # stored meanwhile (cannot happen under the person's lock; harmless)
            return Stored(event.key, EventStatus.REDELIVERED, action, event.terminal)
        await self._insert_deliveries(conn, row[0], event.time, people, held_because)
        if status is EventStatus.HELD:
            return Stored(event.key, status, None, event.terminal, held_because)
        if held_because is not None:
            return Stored(
                event.key, status, action, event.terminal, held_because, held=tuple(people)
            )
        reason = "double swipe" if duplicate_of is not None else None
        return Stored(event.key, status, action, event.terminal, reason)

    async def _decide(
        self, conn: Connection, item: Incoming
    ) -> tuple[Action, EventStatus, int | None, str | None, dict[str, str | None]]:
        """(action, status, the event it repeats, why it is held, person per sink): the
        SQLite store's rules, read under the person's lock."""
        event = item.event
        if item.held is not None:  # an implausible device time: held, decides nothing yet
            placeholder = event.action or Action.IN  # decided when an operator books it
            return placeholder, EventStatus.HELD, None, item.held.reason, _routed(item)
        action = event.action
        if action is None:
            since = self._inference.lookback(event.time, event.terminal, item.group)
            action = self._inference.infer(
                await previous_swipe(conn, event.subject, since, event.time),
                at=event.time,
                terminal=event.terminal,
                group=item.group,
            )
        duplicate_of = await double_swipe(conn, event.subject, action, event.time, self._window)
        if duplicate_of is not None:
            return action, EventStatus.DUPLICATE, duplicate_of, None, {}
        held_because = await self._would_change_a_decided_direction(conn, item, action)
        people = _routed(item)
        mapped = all(person is not None for person in people.values())
        status = EventStatus.ACCEPTED if mapped else EventStatus.UNMAPPED
        return action, status, None, held_because, people

    async def _insert_deliveries(
        self,
        conn: Connection,
        event_id: int,
        when: datetime,
        people: dict[str, str | None],
        held_because: str | None,
    ) -> None:
        now = time.time()
        rows = []
        for sink, person in people.items():
            if held_because is not None:
                state, settled = DeliveryState.HELD, now
            else:
                state = DeliveryState.PENDING if person else DeliveryState.UNMAPPED
                settled = None
            due = now + self._settle_seconds
            rows.append(
                (event_id, sink, person, when, state.value, due, now, settled, held_because)
            )
        async with conn.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO deliveries (event_id, sink, person, event_time, state,"
                " next_attempt_at, created_at, settled_at, last_error)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                rows,
            )

    async def _would_change_a_decided_direction(
        self, conn: Connection, item: Incoming, action: Action
    ) -> str | None:
        """As IntakeMixin's: a late swipe that would change the next one's inferred direction."""
        event = item.event
        later = await _fetch_one(
            conn,
            "SELECT action, event_time, terminal, action_inferred FROM events"
            " WHERE subject = %s AND event_time > %s AND status NOT IN ('duplicate', 'held')"
            " ORDER BY event_time, id LIMIT 1",
            (event.subject, event.time),
        )
        if later is None or not later[3]:
            return None
        return self._inference.late_swipe_problem(
            action,
            at=event.time,
            group=item.group,
            later=(Action(later[0]), later[1], later[2]),
        )


def _routed(item: Incoming) -> dict[str, str | None]:
    """The event's person at each sink its subscription routes it to."""
    people = dict(item.people or {})
    if item.sinks is not None:
        people = {sink: who for sink, who in people.items() if sink in item.sinks}
    return people


async def _release(conn: Connection, updates: list[tuple[str, float, int]]) -> None:
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "UPDATE deliveries SET person = %s, state = 'pending', next_attempt_at = %s"
            " WHERE id = %s AND state = 'unmapped'",
            updates,
        )
    await conn.execute(
        "UPDATE events SET status = 'accepted' WHERE status = 'unmapped' AND NOT EXISTS"
        " (SELECT 1 FROM deliveries AS d WHERE d.event_id = events.id AND d.state = 'unmapped')"
    )


async def _fetch_one(
    conn: Connection, sql: str, params: Sequence[object]
) -> tuple[Any, ...] | None:
    cursor = await conn.execute(sql, params)
    row = await cursor.fetchone()
    return None if row is None else tuple(row)


async def previous_swipe(
    conn: Connection, subject: str, since: datetime, when: datetime
) -> tuple[Action, datetime] | None:
    row = await _fetch_one(
        conn,
        "SELECT action, event_time FROM events WHERE subject = %s AND event_time >= %s"
        " AND event_time <= %s AND status NOT IN ('duplicate', 'held')"
        " ORDER BY event_time DESC, id DESC LIMIT 1",
        (subject, since, when),
    )
    if row is None:
        return None
    return Action(row[0]), row[1]


async def double_swipe(
    conn: Connection, subject: str, action: Action, at: datetime, window_seconds: float
) -> int | None:
    window = timedelta(seconds=window_seconds)
    row = await _fetch_one(
        conn,
        "SELECT id FROM events WHERE subject = %s AND action = %s"
        " AND status NOT IN ('duplicate', 'held') AND event_time BETWEEN %s AND %s"
        " ORDER BY event_time LIMIT 1",
        (subject, action.value, at - window, at + window),
    )
    return None if row is None else int(row[0])
