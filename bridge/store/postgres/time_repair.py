"""`held complete ID --use-received-time` on PostgreSQL: the rules of bridge.store.time_repair
(read its doc), in one transaction that also holds the person's advisory lock, so no bridge
stores or infers that person's next swipe meanwhile."""

from __future__ import annotations

from datetime import datetime, timedelta

from bridge.delivery import EventStatus
from bridge.events import Action
from bridge.store.postgres.connection import Connection, PostgresBase
from bridge.store.postgres.intake import double_swipe, previous_swipe
from bridge.store.postgres.repairs import record_repair
from bridge.store.records import Swiper, utc_text
from bridge.store.time_repair import HeldForTime, People, ReceivedTimeBooking, check_held


class PostgresTimeRepair(PostgresBase):
    async def held_for_time(self, delivery_id: int) -> HeldForTime:
        async with self._reading() as conn:
            row = await (
                await conn.execute(
                    "SELECT d.event_id, d.state, d.sink, e.status, e.badge, e.user_id,"
                    " EXISTS (SELECT 1 FROM deliveries AS h WHERE h.event_id = d.event_id"
                    " AND h.state = 'held' AND h.person IS NULL)"
                    " FROM deliveries AS d JOIN events AS e ON e.id = d.event_id WHERE d.id = %s",
                    (delivery_id,),
                )
            ).fetchone()
        if row is None:
            msg = f"no delivery {delivery_id}"
            raise LookupError(msg)
        event_id, state, sink, status, badge, user, unknown = row
        check_held(delivery_id, state=state, status=status, sink=sink)
        return HeldForTime(event_id, Swiper(badge=badge, user=user), needs_people=bool(unknown))

    async def book_at_received_time(
        self, delivery_id: int, *, people: People, now: float
    ) -> ReceivedTimeBooking:
        booked = await self._transaction(self._book, delivery_id, people, now)
        if booked.requeued:
            self.work.notify()
        return booked

    async def _book(
        self, conn: Connection, delivery_id: int, people: People, now: float
    ) -> ReceivedTimeBooking:
        found = await (
            await conn.execute(
                "SELECT d.state, d.sink, e.id, e.status, e.key, e.subject, e.terminal,"
                " e.action, e.action_inferred, e.event_time, e.received_at"
                " FROM deliveries AS d JOIN events AS e ON e.id = d.event_id WHERE d.id = %s",
                (delivery_id,),
            )
        ).fetchone()
        if found is None:
            msg = f"no delivery {delivery_id}"
            raise LookupError(msg)
        state, sink, event_id, status, key, subject, terminal, action, inferred, device, at = found
        check_held(delivery_id, state=state, status=status, sink=sink)
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (subject,))
        decided = Action(action)
        sent = await (
            await conn.execute(
                "SELECT 1 FROM deliveries WHERE event_id = %s AND state NOT IN ('held', 'dropped')",
                (event_id,),
            )
        ).fetchone()
        infer = bool(inferred) and sent is None
        if infer:  # never turn round a direction a vendor may already hold
            since = self._inference.lookback(at, terminal)
            previous = await previous_swipe(conn, subject, since, at)
            decided = self._inference.infer(previous, at=at, terminal=terminal)
        duplicate_of = await double_swipe(conn, subject, decided, at, self._window)
        booked = ReceivedTimeBooking(
            event_key=key,
            device_time=utc_text(device),
            event_time=utc_text(at),
            action=decided,
            action_inferred=infer,
            status=EventStatus.ACCEPTED,
        )
        await _settle_held(
            conn, event_id, booked, duplicate_of=duplicate_of, people=people, now=now
        )
        await conn.execute(
            "UPDATE events SET event_time = %s, local_day = %s, action = %s, status = %s,"
            " duplicate_of = %s, device_time = %s WHERE id = %s",
            (
                at,
                at.astimezone(self._site_tz).date(),
                decided.value,
                booked.status.value,
                duplicate_of,
                booked.device_time,
                event_id,
            ),
        )
        await conn.execute(
            "UPDATE deliveries SET event_time = %s WHERE event_id = %s", (at, event_id)
        )
        booked.later_inferred = await _later_inferred(conn, subject, at, self._inference.max_shift)
        change = (
            f"held -> pending (booked at its received time {booked.event_time};"
            f" the device said {booked.device_time})"
        )
        await record_repair(conn, change, booked.requeued + booked.unmapped + booked.dropped)
        return booked


async def _settle_held(
    conn: Connection,
    event_id: int,
    booked: ReceivedTimeBooking,
    *,
    duplicate_of: int | None,
    people: People,
    now: float,
) -> None:
    held = await (
        await conn.execute(
            "SELECT id, sink, person FROM deliveries WHERE event_id = %s AND state = 'held'",
            (event_id,),
        )
    ).fetchall()
    if duplicate_of is not None:
        row = await (
            await conn.execute("SELECT key FROM events WHERE id = %s", (duplicate_of,))
        ).fetchone()
        repeated = None if row is None else str(row[0])
        booked.status, booked.duplicate_of = EventStatus.DUPLICATE, repeated
        booked.dropped = [delivery_id for delivery_id, _, _ in held]
        await conn.execute(
            "UPDATE deliveries SET state = 'dropped', settled_at = %s, last_error = %s"
            " WHERE id = ANY(%s)",
            (now, f"double swipe of {repeated} at the received time", booked.dropped),
        )
        return
    for delivery_id, sink, person in held:
        who = person or people.get(sink)
        if who is None:
            booked.unmapped.append(delivery_id)
            await conn.execute(
                "UPDATE deliveries SET state = 'unmapped' WHERE id = %s", (delivery_id,)
            )
        else:
            booked.requeued.append(delivery_id)
            await conn.execute(
                "UPDATE deliveries SET state = 'pending', person = %s, next_attempt_at = %s"
                " WHERE id = %s",
                (who, now, delivery_id),
            )
    if booked.unmapped:
        booked.status = EventStatus.UNMAPPED


async def _later_inferred(
    conn: Connection, subject: str, at: datetime, max_shift: timedelta
) -> int:
    row = await (
        await conn.execute(
            "SELECT COUNT(*) FROM events WHERE subject = %s AND event_time > %s"
            " AND event_time <= %s AND action_inferred"
            " AND status NOT IN ('duplicate', 'held')",
            (subject, at, at + max_shift),
        )
    ).fetchone()
    return 0 if row is None else int(row[0])
