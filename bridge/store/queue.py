"""The delivery queue: claim due work in per-person order, settle outcomes, recover."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from bridge.delivery import DeliveryState, Job, Result, settlement_of
from bridge.events import Action
from bridge.store.connection import StoreBase
from bridge.store.records import parse_utc_text


@dataclass(frozen=True, slots=True)
class Claim:
    jobs: list[Job]  # in event-time order
    # When fewer than asked were due: when the next claimable one falls due (None: none waits).
    next_due: float | None
    # Claimable but held instead, with why: older than the person's last punch already applied
    # at a sink that keeps state per person (claim_batch's hold_late).
    late: list[tuple[Job, str]] = field(default_factory=list)


# A pending delivery may be sent when no delivery of its person is in flight and it is the
# person's oldest pending one. Two NOT EXISTS rather than one with OR, so that each is a seek on
# deliveries_person.
_CLAIMABLE = """
    d.sink = :sink AND d.state = 'pending'
    AND NOT EXISTS (
        SELECT 1 FROM deliveries AS e
        WHERE e.sink = d.sink AND e.person = d.person AND e.state = 'inflight')
    AND NOT EXISTS (
        SELECT 1 FROM deliveries AS e
        WHERE e.sink = d.sink AND e.person = d.person AND e.state = 'pending'
          AND (e.event_time < d.event_time OR (e.event_time = d.event_time AND e.id < d.id)))
"""

_CLAIM_SQL = f"""
UPDATE deliveries SET state = 'inflight', attempts = attempts + 1
WHERE id IN (
    SELECT d.id FROM deliveries AS d
    WHERE {_CLAIMABLE}
      -- due; or scheduled further ahead than any retry can be, which only happens when the
      -- gateway's clock was set back after the schedule was written
      AND (d.next_attempt_at <= :now OR d.next_attempt_at > :now + :horizon)
    ORDER BY d.next_attempt_at, d.event_time
    LIMIT :limit)
RETURNING id
"""

# When the next claimable delivery falls due. Only what a claim could take counts: a person's
# later punches waiting behind one in flight or retrying must not make the pump spin.
_NEXT_DUE_SQL = f"""
SELECT d.next_attempt_at FROM deliveries AS d
WHERE {_CLAIMABLE}
ORDER BY d.next_attempt_at
LIMIT 1
"""

# The latest punch of the person already applied at the sink after this delivery's own time,
# unless an operator released this one to go out of order (a seek on deliveries_person).
_APPLIED_LATER_SQL = """
SELECT MAX(l.event_time) FROM deliveries AS d
JOIN deliveries AS l ON l.sink = d.sink AND l.person = d.person AND l.state = 'delivered'
    AND l.event_time > d.event_time
WHERE d.id = ? AND d.out_of_order = 0
"""

_JOB_SQL = """
SELECT d.id, d.sink, d.person, d.attempts, d.created_at, e.key, e.source_id, e.action,
       e.event_time, e.terminal, e.job, e.lat, e.lon, e.note, p.state
FROM deliveries AS d JOIN events AS e ON e.id = d.event_id
LEFT JOIN person_state AS p ON p.sink = d.sink AND p.person = d.person
WHERE d.id = ?
"""


class QueueMixin(StoreBase):
    async def recover_inflight(self) -> int:
        """At start: deliveries a crashed or killed run had in hand go out again."""
        return await self._write(_recover_inflight, time.time(), durable=False)

    async def claim(
        self,
        sink: str,
        *,
        limit: int,
        now: float,
        horizon: float = 86400.0,
        resend_harmless: bool = False,
    ) -> list[Job]:
        """Claim due deliveries (the attempt is counted now, so a crash still uses one up)."""
        return (
            await self.claim_batch(
                sink, limit=limit, now=now, horizon=horizon, resend_harmless=resend_harmless
            )
        ).jobs

    async def claim_batch(
        self,
        sink: str,
        *,
        limit: int,
        now: float,
        horizon: float = 86400.0,
        hold_late: bool = False,
        resend_harmless: bool = False,
    ) -> Claim:
        """Claim up to `limit` due deliveries; when fewer were due, also say when the next
        claimable one falls due (in the same call to the database thread).

        `hold_late`, for a sink that keeps state per person (McTime's clock, TimeTrack's open
        shift): a punch older than one of the person's already applied there is never applied
        out of order; it is held for an operator instead, and listed in `Claim.late`.
        `resend_harmless`: the sink's vendor answers a resent punch as a duplicate, so the
        claim need not be flushed before the send (bridge/store/durability.py)."""
        params = {"sink": sink, "now": now, "limit": limit, "horizon": horizon}
        late_rule = self._site_tz if hold_late else None
        claiming = asyncio.ensure_future(
            self._write(_claim, params, late_rule, durable=not resend_harmless)
        )
        try:
            claim = await asyncio.shield(claiming)
        except asyncio.CancelledError:
            # The claim runs to its end on the database thread: hand back what it took, or it
            # would wait as 'inflight' for the next start.
            with contextlib.suppress(Exception):
                await self.unclaim((await claiming).jobs)
            raise
        return claim

    async def renew(self, jobs: Sequence[Job], *, now: float) -> int:  # noqa: ARG002 - the contract's
        """Nothing to renew: one daemon holds the SQLite file (its lock), and its claims stay
        its own until it starts again (recover_inflight). How many it holds."""
        return len(jobs)

    async def unclaim(self, jobs: Sequence[Job]) -> None:
        """Hand back claimed deliveries that were not sent: pending again, attempt not used."""
        if jobs:
            await self._write(_unclaim, [job.delivery_id for job in jobs], durable=False)

    async def settle(
        self, job: Job, result: Result, *, retry_at: float, now: float
    ) -> DeliveryState:
        """Record a send's result (and the person's new state at the sink, in the same
        transaction); return the delivery's new state."""
        return await self._write(_settle, job, result, retry_at, now, durable=False)

    async def expire(self, job: Job, *, now: float, max_age_days: float) -> bool:
        """Kill a delivery the bridge has been retrying for longer than the age limit; True when
        it did. The age runs from when the bridge stored the event, not from the event's own
        time: a terminal uploading a three-week-old buffer, or a backlog after a long outage, is
        retried like anything else."""
        if now - job.stored_at <= max_age_days * 86400:
            return False
        reason = f"gave up: retried for more than {max_age_days:g} days since it was stored"
        await self._write(_give_up, job.delivery_id, now, reason, durable=False)
        return True


# --- on the connection's thread, inside one transaction (StoreBase._write) -------------------


def _claim(conn: sqlite3.Connection, params: dict[str, Any], late_rule: tzinfo | None) -> Claim:
    """Claim; with `late_rule` (the site's zone, for the reason's wording), hold what is late."""
    ids = [row[0] for row in conn.execute(_CLAIM_SQL, params).fetchall()]
    jobs = [_job(conn.execute(_JOB_SQL, (delivery_id,)).fetchone()) for delivery_id in ids]
    late = [] if late_rule is None else _hold_late(conn, jobs, params["now"], late_rule)
    if late:
        held = {job.delivery_id for job, _ in late}
        jobs = [job for job in jobs if job.delivery_id not in held]
    jobs.sort(key=lambda job: (job.time, job.delivery_id))
    next_due = None
    if len(jobs) + len(late) < params["limit"]:
        row = conn.execute(_NEXT_DUE_SQL, params).fetchone()
        next_due = row[0] if row else None
    return Claim(jobs, next_due, late)


def _hold_late(
    conn: sqlite3.Connection, jobs: list[Job], now: float, tz: tzinfo
) -> list[tuple[Job, str]]:
    """Hold each claimed job older than a punch of its person already applied at the sink:
    the vendor's state for that person has moved past it. Not an attempt: nothing was sent."""
    late = []
    for job in jobs:
        applied = conn.execute(_APPLIED_LATER_SQL, (job.delivery_id,)).fetchone()[0]
        if applied is None:
            continue
        at = parse_utc_text(applied).astimezone(tz).isoformat(timespec="seconds")
        reason = f"late: older than the last action sent at {at}"
        conn.execute(
            "UPDATE deliveries SET state = 'held', attempts = attempts - 1, settled_at = ?,"
            " last_error = ? WHERE id = ?",
            (now, reason, job.delivery_id),
        )
        late.append((job, reason))
    return late


def _unclaim(conn: sqlite3.Connection, delivery_ids: list[int]) -> None:
    conn.executemany(
        "UPDATE deliveries SET state = 'pending', attempts = attempts - 1"
        " WHERE id = ? AND state = 'inflight'",
        [(delivery_id,) for delivery_id in delivery_ids],
    )


def _job(row: sqlite3.Row) -> Job:
    return Job(
        delivery_id=row["id"],
        event_key=row["key"],
        sink=row["sink"],
        person=row["person"],
        action=Action(row["action"]),
        time=parse_utc_text(row["event_time"]),
        terminal=row["terminal"],
        attempt=row["attempts"],
        job=row["job"],
        lat=row["lat"],
        lon=row["lon"],
        note=row["note"],
        state=json.loads(row["state"] or "{}"),
        stored_at=row["created_at"],
        source_id=row["source_id"],
    )


def _settle(
    conn: sqlite3.Connection, job: Job, result: Result, retry_at: float, now: float
) -> DeliveryState:
    """Persist what settlement_of makes of the answer, with the person's new state."""
    if result.state is not None:
        conn.execute(
            "INSERT INTO person_state (sink, person, state, updated_at) VALUES (?,?,?,?)"
            " ON CONFLICT (sink, person) DO UPDATE SET state = excluded.state,"
            " updated_at = excluded.updated_at",
            (job.sink, job.person, json.dumps(dict(result.state)), now),
        )
    settled = settlement_of(result, retry_at=retry_at, now=now)
    if settled.state is DeliveryState.DELIVERED:
        conn.execute(
            "UPDATE deliveries SET state = 'delivered', outcome = ?, settled_at = ?,"
            " last_error = NULL WHERE id = ?",
            (result.outcome.value, now, job.delivery_id),
        )
    elif settled.state is not DeliveryState.PENDING:  # an end state (dead, held), with why
        conn.execute(
            "UPDATE deliveries SET state = ?, settled_at = ?, last_error = ? WHERE id = ?",
            (settled.state.value, now, settled.error, job.delivery_id),
        )
    else:
        conn.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, last_error = ?,"
            " attempts = attempts - ? WHERE id = ?",
            (settled.retry_at, settled.error, 0 if settled.attempt_counts else 1, job.delivery_id),
        )
        if settled.attempt_counts:
            _hold_back_later_punches(conn, job, settled.retry_at or now)
    return settled.state


# Every sink that has deliveries, found by jumping through deliveries_due (sink first): a few
# index lookups. A bare `WHERE state = ...` reads every delivery ever made (10 M rows with 2.5
# years of two sinks), which at each start cost seconds, and a minute with a cold cache.
SINKS_WITH_DELIVERIES = """
    WITH RECURSIVE sinks(sink) AS (
        SELECT MIN(sink) FROM deliveries
        UNION ALL
        SELECT (SELECT MIN(sink) FROM deliveries WHERE sink > sinks.sink)
            FROM sinks WHERE sink IS NOT NULL
    )
    SELECT sink FROM sinks WHERE sink IS NOT NULL
"""


def _recover_inflight(conn: sqlite3.Connection, now: float) -> int:
    cursor = conn.execute(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = ?"
        f" WHERE sink IN ({SINKS_WITH_DELIVERIES}) AND state = 'inflight'",
        (now,),
    )
    return cursor.rowcount


def _give_up(conn: sqlite3.Connection, delivery_id: int, now: float, reason: str) -> None:
    conn.execute(
        "UPDATE deliveries SET state = 'dead', settled_at = ?, last_error = ? WHERE id = ?",
        (now, reason, delivery_id),
    )


def _hold_back_later_punches(conn: sqlite3.Connection, job: Job, retry_at: float) -> None:
    """The person's later punches wait behind this one: schedule them no earlier, so that a
    claim's scan of what is due passes over them instead of finding and skipping each."""
    conn.execute(
        "UPDATE deliveries SET next_attempt_at = :at"
        " WHERE sink = :sink AND person = :person AND state = 'pending' AND next_attempt_at < :at"
        " AND (event_time, id) > (SELECT event_time, id FROM deliveries WHERE id = :id)",
        {"at": retry_at, "sink": job.sink, "person": job.person, "id": job.delivery_id},
    )
