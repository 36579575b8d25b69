"""The delivery queue on PostgreSQL, shared by several bridges (FIELD-NOTES §3).

- A claim takes due deliveries `FOR UPDATE SKIP LOCKED` under the head-of-line rule of the SQLite
  store: a person's delivery is claimable only when none of theirs at that sink is in flight and
  no earlier one is pending. The unique partial index `deliveries_one_inflight` is the backstop:
  two instances racing for one person's different deliveries (a late punch arriving between
  their snapshots) cannot both hold one; the loser's claim is tried again.
- A claim carries the instance's id and a lease (`lease_seconds`), renewed while sending. A lease
  that runs out (the instance died, or lost the database) hands the delivery back to everyone,
  with its attempt counted: the stateful sinks read the vendor back before acting on a resend.
- A settle is guarded by the claim: an instance whose lease ran out and whose delivery another
  instance took over writes nothing (the other's outcome stands).
- The person's McTime/TimeTrack state is read with the claim and written with the settle, while
  the delivery is that person's only one in flight: two instances never act on one clock.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bridge.delivery import DeliveryState, Job, Result, settlement_of
from bridge.events import Action
from bridge.store.postgres.connection import Connection, PostgresBase, execute
from bridge.store.queue import Claim

_CLAIMABLE = """
    d.sink = %(sink)s AND d.state = 'pending'
    AND NOT EXISTS (
        SELECT 1 FROM deliveries AS e
        WHERE e.sink = d.sink AND e.person = d.person AND e.state = 'inflight')
    -- the person's first pending one by (event_time, id): an ordered seek on deliveries_person,
    -- whatever the planner's statistics say (a fresh table has none)
    AND d.id = (
        SELECT e.id FROM deliveries AS e
        WHERE e.sink = d.sink AND e.person = d.person AND e.state = 'pending'
        ORDER BY e.event_time, e.id LIMIT 1)
"""

_CLAIM_SQL = f"""
WITH due AS (
    SELECT d.id FROM deliveries AS d
    WHERE {_CLAIMABLE}
      AND (d.next_attempt_at <= %(now)s OR d.next_attempt_at > %(now)s + %(horizon)s)
    ORDER BY d.next_attempt_at  -- deliveries_due's order: the scan stops at the limit
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
UPDATE deliveries AS d SET state = 'inflight', attempts = attempts + 1,
    claimed_by = %(instance)s, lease_until = %(now)s + %(lease)s
FROM due WHERE d.id = due.id
RETURNING d.id
"""

_NEXT_DUE_SQL = f"""
SELECT d.next_attempt_at FROM deliveries AS d WHERE {_CLAIMABLE}
ORDER BY d.next_attempt_at LIMIT 1
"""

_JOB_SQL = """
SELECT d.id, d.sink, d.person, d.attempts, d.created_at, e.key, e.source_id, e.action,
       e.event_time, e.terminal, e.job, e.lat, e.lon, e.note, p.state
FROM deliveries AS d JOIN events AS e ON e.id = d.event_id
LEFT JOIN person_state AS p ON p.sink = d.sink AND p.person = d.person
WHERE d.id = ANY(%s)
"""

_APPLIED_LATER_SQL = """
SELECT MAX(l.event_time) FROM deliveries AS d
JOIN deliveries AS l ON l.sink = d.sink AND l.person = d.person AND l.state = 'delivered'
    AND l.event_time > d.event_time
WHERE d.id = %s AND NOT d.out_of_order
"""

# Deliveries whose claim's lease ran out go back to everyone (the attempt stays counted).
_EXPIRED_SQL = """
UPDATE deliveries SET state = 'pending', next_attempt_at = %(now)s, claimed_by = NULL,
    lease_until = NULL
WHERE state = 'inflight' AND lease_until < %(now)s
"""


class PostgresQueue(PostgresBase):
    async def recover_inflight(self, *, now: float | None = None) -> int:
        """At start: this instance's own claims (from before a crash: it is starting, so none
        is being sent) and those whose lease ran out (a dead instance's) go out again; another
        live instance's claims are left alone."""
        at = time.time() if now is None else now
        own = await self._transaction(
            execute,
            "UPDATE deliveries SET state = 'pending', next_attempt_at = %s, claimed_by = NULL,"
            " lease_until = NULL WHERE state = 'inflight' AND claimed_by = %s",
            (at, self.instance),
        )
        return own + await self._transaction(_recover_expired, at)

    async def claim(
        self, sink: str, *, limit: int, now: float, horizon: float = 86400.0
    ) -> list[Job]:
        return (await self.claim_batch(sink, limit=limit, now=now, horizon=horizon)).jobs

    async def claim_batch(
        self,
        sink: str,
        *,
        limit: int,
        now: float,
        horizon: float = 86400.0,
        hold_late: bool = False,
        resend_harmless: bool = False,  # noqa: ARG002 - every PostgreSQL commit is durable
    ) -> Claim:
        """As the SQLite store's claim_batch, for several instances (see the module's doc)."""
        params = {
            "sink": sink,
            "now": now,
            "limit": limit,
            "horizon": horizon,
            "instance": self.instance,
            "lease": self.lease_seconds,
        }
        return await self._transaction(self._claim, params, hold_late=hold_late)

    async def _claim(self, conn: Connection, params: dict[str, Any], *, hold_late: bool) -> Claim:
        await _recover_expired(conn, params["now"])
        ids = [row[0] for row in await (await conn.execute(_CLAIM_SQL, params)).fetchall()]
        rows = await (await conn.execute(_JOB_SQL, (ids,))).fetchall() if ids else []
        jobs = sorted((_job(row) for row in rows), key=lambda job: (job.time, job.delivery_id))
        late = await self._hold_late(conn, jobs, params["now"]) if hold_late else []
        held = {job.delivery_id for job, _ in late}
        jobs = [job for job in jobs if job.delivery_id not in held]
        next_due = None
        if len(jobs) + len(late) < params["limit"]:
            row = await (await conn.execute(_NEXT_DUE_SQL, params)).fetchone()
            next_due = None if row is None else float(row[0])
        return Claim(jobs, next_due, late)

    async def _hold_late(
        self, conn: Connection, jobs: list[Job], now: float
    ) -> list[tuple[Job, str]]:
        late = []
        for job in jobs:
            row = await (await conn.execute(_APPLIED_LATER_SQL, (job.delivery_id,))).fetchone()
            if row is None or row[0] is None:
                continue
            at = row[0].astimezone(self._site_tz).isoformat(timespec="seconds")
            reason = f"late: older than the last action sent at {at}"
            await conn.execute(
                "UPDATE deliveries SET state = 'held', attempts = attempts - 1, settled_at = %s,"
                " last_error = %s, claimed_by = NULL, lease_until = NULL WHERE id = %s",
                (now, reason, job.delivery_id),
            )
            late.append((job, reason))
        return late

    async def renew(self, jobs: Sequence[Job], *, now: float) -> int:
        """Extend this instance's leases on deliveries it is still sending; how many it held."""
        if not jobs:
            return 0
        return await self._transaction(
            execute,
            "UPDATE deliveries SET lease_until = %s WHERE id = ANY(%s) AND state = 'inflight'"
            " AND claimed_by = %s",
            (now + self.lease_seconds, [job.delivery_id for job in jobs], self.instance),
        )

    async def unclaim(self, jobs: Sequence[Job]) -> None:
        if jobs:
            await self._transaction(
                execute,
                "UPDATE deliveries SET state = 'pending', attempts = attempts - 1,"
                " claimed_by = NULL, lease_until = NULL"
                " WHERE id = ANY(%s) AND state = 'inflight' AND claimed_by = %s",
                ([job.delivery_id for job in jobs], self.instance),
            )

    async def settle(
        self, job: Job, result: Result, *, retry_at: float, now: float
    ) -> DeliveryState:
        """Record a send's result with the person's new state; a claim this instance no longer
        holds (its lease ran out and another took the delivery) writes nothing."""
        return await self._transaction(self._settle, job, result, retry_at, now)

    async def _settle(
        self, conn: Connection, job: Job, result: Result, retry_at: float, now: float
    ) -> DeliveryState:
        settled = settlement_of(result, retry_at=retry_at, now=now)
        state = settled.state
        sets = "state = %(state)s, claimed_by = NULL, lease_until = NULL"
        if state is DeliveryState.DELIVERED:
            sets += ", outcome = %(outcome)s, settled_at = %(now)s, last_error = NULL"
        elif state is DeliveryState.PENDING:
            sets += ", next_attempt_at = %(retry_at)s, last_error = %(error)s"
            sets += ", attempts = attempts - %(given_back)s"
        else:
            sets += ", settled_at = %(now)s, last_error = %(error)s"
        params = {
            "state": state.value,
            "outcome": result.outcome.value,
            "now": now,
            "retry_at": settled.retry_at,
            "error": settled.error,
            "given_back": 0 if settled.attempt_counts else 1,
            "id": job.delivery_id,
            "instance": self.instance,
        }
        cursor = await conn.execute(
            f"UPDATE deliveries SET {sets}"
            " WHERE id = %(id)s AND state = 'inflight' AND claimed_by = %(instance)s",
            params,
        )
        if cursor.rowcount == 0:
            return DeliveryState.INFLIGHT  # another instance holds it now: its outcome stands
        if result.state is not None:
            await conn.execute(
                "INSERT INTO person_state (sink, person, state, updated_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (sink, person) DO UPDATE"
                " SET state = excluded.state, updated_at = excluded.updated_at",
                (job.sink, job.person, json.dumps(dict(result.state)), now),
            )
        return state

    async def expire(self, job: Job, *, now: float, max_age_days: float) -> bool:
        if now - job.stored_at <= max_age_days * 86400:
            return False
        reason = f"gave up: retried for more than {max_age_days:g} days since it was stored"
        await self._transaction(
            execute,
            "UPDATE deliveries SET state = 'dead', settled_at = %s, last_error = %s,"
            " claimed_by = NULL, lease_until = NULL WHERE id = %s",
            (now, reason, job.delivery_id),
        )
        return True


async def _recover_expired(conn: Connection, now: float) -> int:
    return (await conn.execute(_EXPIRED_SQL, {"now": now})).rowcount


def _job(row: Sequence[Any]) -> Job:
    (delivery_id, sink, person, attempts, created_at, key, source_id, action, event_time) = row[:9]
    terminal, job, lat, lon, note, state = row[9:]
    assert isinstance(event_time, datetime)  # noqa: S101 - the schema's type
    with contextlib.suppress(TypeError):
        state = json.loads(state) if isinstance(state, str) else state
    return Job(
        delivery_id=delivery_id,
        event_key=key,
        sink=sink,
        person=person,
        action=Action(action),
        time=event_time,
        terminal=terminal,
        attempt=attempts,
        job=job,
        lat=lat,
        lon=lon,
        note=note,
        state=state or {},
        stored_at=created_at,
        source_id=source_id,
    )
