"""An event held for its implausible device time, booked at the time the gateway received it.

`held complete ID --use-received-time`: in one transaction the event's time becomes its
received time (the device's time kept in `device_time`, for the audit trail), what depends on
the time is decided again for this event alone (its local day; its action, if the terminal
sent none and nothing of it was ever sent; whether it is a double swipe), and every delivery of
it still held goes back in line: pending and due now, unmapped while the directory does not
know the person, or dropped when it turns out to repeat a swipe already stored. Later swipes
of the person were decided without it and are left as they are: some may have been delivered.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bridge.delivery import EventStatus
from bridge.events import Action
from bridge.store.connection import StoreBase, fetch_all
from bridge.store.inference import InferenceRules
from bridge.store.intake import double_swipe_of, previous_swipe
from bridge.store.records import Swiper, parse_utc_text, utc_text
from bridge.store.repairs import record_repair

# Who the person is at each sink with a held delivery that had none (looked up by the caller,
# on the event loop, before the write); a sink missing here stays unmapped.
People = Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class HeldForTime:
    """What `held complete --use-received-time` needs to know before the write."""

    event_id: int
    swiper: Swiper  # for the directory, when a held delivery has no person yet
    needs_people: bool  # some held delivery of it has no person


@dataclass(slots=True)
class ReceivedTimeBooking:
    """What booking a held event at its received time did."""

    event_key: str
    device_time: str  # UTC text, as the device said
    event_time: str  # UTC text: the received time it is booked at now
    action: Action
    action_inferred: bool  # decided again by inference at the received time
    status: EventStatus  # accepted, unmapped or duplicate
    requeued: list[int] = field(default_factory=list)  # pending, due now
    unmapped: list[int] = field(default_factory=list)  # waiting for the directory
    dropped: list[int] = field(default_factory=list)  # a double swipe at the received time
    duplicate_of: str | None = None  # the key of the event it repeats
    later_inferred: int = 0  # the person's later swipes that were inferred without it


class TimeRepairMixin(StoreBase):
    async def held_for_time(self, delivery_id: int) -> HeldForTime:
        """The held event behind `delivery_id`; LookupError saying why when there is none."""
        rows = await fetch_all(
            self._db,
            "SELECT d.event_id, d.state, d.sink, e.status, e.badge, e.user_id,"
            " EXISTS (SELECT 1 FROM deliveries AS h WHERE h.event_id = d.event_id"
            " AND h.state = 'held' AND h.person IS NULL)"
            " FROM deliveries AS d JOIN events AS e ON e.id = d.event_id WHERE d.id = ?",
            (delivery_id,),
        )
        if not rows:
            msg = f"no delivery {delivery_id}"
            raise LookupError(msg)
        event_id, state, sink, status, badge, user, unknown = rows[0]
        check_held(delivery_id, state=state, status=status, sink=sink)
        return HeldForTime(event_id, Swiper(badge=badge, user=user), needs_people=bool(unknown))

    async def book_at_received_time(
        self, delivery_id: int, *, people: People, now: float
    ) -> ReceivedTimeBooking:
        """Book the held event behind `delivery_id` at its received time and put its held
        deliveries back in line, in one transaction (see the module's doc). LookupError
        (nothing written) when the delivery is not held for its event's time."""
        rules = _Rules(self._inference, self._window)
        booked = await self._write(_book, delivery_id, people, now, rules)
        if booked.requeued:
            self.work.notify()
        return booked


def check_held(delivery_id: int, *, state: str, status: str, sink: str) -> None:
    if state != "held":
        msg = f"delivery {delivery_id} is {state}, not held"
        raise LookupError(msg)
    if status != EventStatus.HELD:
        msg = (
            f"delivery {delivery_id} is held by {sink} for the person's shift, not for its time:"
            " complete it with --to or --from"
        )
        raise LookupError(msg)


# --- on the writer's thread, inside the one write path (StoreBase._write) ---------------------


@dataclass(frozen=True, slots=True)
class _Rules:
    """The store's own rules for what depends on an event's time."""

    inference: InferenceRules  # its tz is the site's
    window_seconds: float  # the double-swipe window


def _book(
    conn: sqlite3.Connection,
    delivery_id: int,
    people: People,
    now: float,
    rules: _Rules,
) -> ReceivedTimeBooking:
    found = conn.execute(
        "SELECT d.state, d.sink, e.id, e.status, e.key, e.subject, e.terminal, e.action,"
        " e.action_inferred, e.event_time, e.received_at"
        " FROM deliveries AS d JOIN events AS e ON e.id = d.event_id WHERE d.id = ?",
        (delivery_id,),
    ).fetchone()
    if found is None:
        msg = f"no delivery {delivery_id}"
        raise LookupError(msg)
    state, sink, event_id, status, key, subject, terminal, action, inferred, device, when = found
    check_held(delivery_id, state=state, status=status, sink=sink)
    at = parse_utc_text(when)
    decided = Action(action)
    # Never turn round a direction a vendor may already hold: infer again only when nothing of
    # this event left the bridge (all its deliveries were held from the start; drop keeps that).
    sent = conn.execute(
        "SELECT 1 FROM deliveries WHERE event_id = ? AND state NOT IN ('held', 'dropped')",
        (event_id,),
    ).fetchone()
    infer = bool(inferred) and sent is None
    if infer:
        since = rules.inference.lookback(at, terminal)
        previous = previous_swipe(conn, subject, since, when)
        decided = rules.inference.infer(previous, at=at, terminal=terminal)
    duplicate_of = double_swipe_of(conn, subject, decided, at, rules.window_seconds)
    booked = ReceivedTimeBooking(
        event_key=key,
        device_time=device,
        event_time=when,
        action=decided,
        action_inferred=infer,
        status=EventStatus.ACCEPTED,
    )
    _settle_held(conn, event_id, booked, duplicate_of=duplicate_of, people=people, now=now)
    local_day = at.astimezone(rules.inference.tz).date().isoformat()
    conn.execute(
        "UPDATE events SET event_time = ?, local_day = ?, action = ?, status = ?,"
        " duplicate_of = ?, device_time = ? WHERE id = ?",
        (when, local_day, decided.value, booked.status, duplicate_of, device, event_id),
    )
    # Every delivery of it, held or dropped, carries the event's time: the per-person order key.
    conn.execute("UPDATE deliveries SET event_time = ? WHERE event_id = ?", (when, event_id))
    booked.later_inferred = _later_inferred(conn, subject, at, rules.inference.max_shift)
    changed = booked.requeued + booked.unmapped + booked.dropped
    change = f"held -> pending (booked at its received time {when}; the device said {device})"
    record_repair(conn, change, changed)
    return booked


def _settle_held(
    conn: sqlite3.Connection,
    event_id: int,
    booked: ReceivedTimeBooking,
    *,
    duplicate_of: int | None,
    people: People,
    now: float,
) -> None:
    """Move the event's held deliveries on, and set booked.status to match."""
    held = conn.execute(
        "SELECT id, sink, person FROM deliveries WHERE event_id = ? AND state = 'held'",
        (event_id,),
    ).fetchall()
    if duplicate_of is not None:
        [(repeated,)] = conn.execute("SELECT key FROM events WHERE id = ?", (duplicate_of,))
        booked.status, booked.duplicate_of = EventStatus.DUPLICATE, repeated
        booked.dropped = [row[0] for row in held]
        conn.executemany(
            "UPDATE deliveries SET state = 'dropped', settled_at = ?, last_error = ? WHERE id = ?",
            [(now, f"double swipe of {repeated} at the received time", row[0]) for row in held],
        )
        return
    for delivery_id, sink, person in held:
        who = person or people.get(sink)
        if who is None:
            booked.unmapped.append(delivery_id)
            conn.execute("UPDATE deliveries SET state = 'unmapped' WHERE id = ?", (delivery_id,))
        else:
            booked.requeued.append(delivery_id)
            conn.execute(
                "UPDATE deliveries SET state = 'pending', person = ?, next_attempt_at = ?"
                " WHERE id = ?",
                (who, now, delivery_id),
            )
    if booked.unmapped:
        booked.status = EventStatus.UNMAPPED


def _later_inferred(
    conn: sqlite3.Connection, subject: str, at: datetime, max_shift: timedelta
) -> int:
    """The person's swipes in the shift after `at` whose action was inferred without it."""
    [(count,)] = conn.execute(
        "SELECT COUNT(*) FROM events WHERE subject = ? AND event_time > ? AND event_time <= ?"
        " AND action_inferred AND status NOT IN ('duplicate', 'held')",
        (subject, utc_text(at), utc_text(at + max_shift)),
    )
    return int(count)
