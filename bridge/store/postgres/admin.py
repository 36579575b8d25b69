"""Operator repairs on PostgreSQL (as bridge.store.admin): inspect and move deliveries and
rejected payloads by hand, beside any number of running bridges.

Every state change is an UPDATE guarded by the state the operator expects (`WHERE id = ANY(...)
AND state = 'dead'`), a chunk per transaction, with its `repairs` row in the same transaction;
a row that another instance moved meanwhile is reported with the state it has, never
clobbered. A delivery put back in line loses any claim and lease it had. Nothing is deleted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from bridge.store.admin import _DELIVERY_SQL, CHUNK, Moved, StateChange
from bridge.store.postgres.connection import Connection, PostgresBase
from bridge.store.postgres.rejected import set_rejected_cap
from bridge.store.postgres.repairs import record_repair
from bridge.store.postgres.rows import fetch_dicts

# _DELIVERY_SQL is the SQLite store's own (no placeholders): the same columns by the same names.
# What every move back in line also clears: a claim and its lease belong to the old state.
_UNCLAIMED = "claimed_by = NULL, lease_until = NULL"


class PostgresAdmin(PostgresBase):
    # --- deliveries: read ------------------------------------------------------------------

    async def deliveries_in(
        self, state: str, *, sink: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        where, params = "WHERE d.state = %s", [state]
        if sink is not None:
            where += " AND d.sink = %s"
            params.append(sink)
        sql = f"{_DELIVERY_SQL} {where} ORDER BY d.event_time, d.id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        async with self._reading() as conn:
            return await fetch_dicts(conn, sql, params)

    async def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        async with self._reading() as conn:
            rows = await fetch_dicts(conn, f"{_DELIVERY_SQL} WHERE d.id = %s", (delivery_id,))
        return rows[0] if rows else None

    async def person_state(self, sink: str, person: str | None) -> dict[str, Any]:
        async with self._reading() as conn:
            cursor = await conn.execute(
                "SELECT state FROM person_state WHERE sink = %s AND person = %s", (sink, person)
            )
            row: tuple[Any, ...] | None = await cursor.fetchone()
        return _state_of(row)

    async def ids_in(self, state: str, *, sink: str | None = None) -> list[int]:
        sql, params = "SELECT id FROM deliveries WHERE state = %s", [state]
        if sink is not None:
            sql += " AND sink = %s"
            params.append(sink)
        async with self._reading() as conn:
            cursor = await conn.execute(sql + " ORDER BY event_time, id", params)
            rows: list[tuple[Any, ...]] = await cursor.fetchall()
        return [int(row[0]) for row in rows]

    async def delivered_between(self, sink: str, *, since: str, until: str | None) -> list[int]:
        """Ids of the sink's delivered deliveries with since <= event_time < until (UTC text)."""
        sql = (
            "SELECT id FROM deliveries WHERE sink = %s AND state = 'delivered'"
            " AND event_time >= %s::timestamptz"
        )
        params = [sink, since]
        if until is not None:
            sql += " AND event_time < %s::timestamptz"
            params.append(until)
        async with self._reading() as conn:
            cursor = await conn.execute(sql + " ORDER BY event_time, id", params)
            rows: list[tuple[Any, ...]] = await cursor.fetchall()
        return [int(row[0]) for row in rows]

    # --- deliveries: guarded changes ---------------------------------------------------------

    async def move(
        self,
        ids: Sequence[int],
        *,
        expect: str,
        to: str,
        reset_attempts: bool = False,
        now: float | None = None,
    ) -> Moved:
        """Move the given deliveries from state `expect` to `to`; report those not in `expect`.

        To 'pending' they are due now. A retry resets the attempts; last_error stays as history.
        """
        sets = ["state = %(to)s", _UNCLAIMED]
        sets.append("next_attempt_at = %(at)s" if to == "pending" else "settled_at = %(at)s")
        if reset_attempts:
            sets.append("attempts = 0")
        at = time.time() if now is None else now
        moved = await self._guarded(
            f"UPDATE deliveries SET {', '.join(sets)}"
            " WHERE id = ANY(%(ids)s) AND state = %(expect)s RETURNING id",
            {"to": to, "at": at, "expect": expect},
            ids,
            f"{expect} -> {to}",
        )
        if moved.changed and to == "pending":
            self.work.notify()
        return moved

    async def release_held(self, ids: Sequence[int], *, now: float) -> Moved:
        """Send held deliveries as they are: due now, and allowed out of order (a late punch
        goes although a later one of the person was applied; the operator decided). One
        whose person is not known at the sink yet waits as unmapped."""
        moved = await self._guarded(
            "UPDATE deliveries SET"
            " state = CASE WHEN person IS NULL THEN 'unmapped' ELSE 'pending' END,"
            f" next_attempt_at = %(at)s, out_of_order = TRUE, {_UNCLAIMED}"
            " WHERE id = ANY(%(ids)s) AND state = 'held' RETURNING id",
            {"at": now},
            ids,
            "held -> pending (released as is)",
        )
        if moved.changed:
            self.work.notify()
        return moved

    async def replay(self, ids: Sequence[int], *, now: float) -> Moved:
        """Send delivered deliveries again: back to pending, due now, `replayed` counted. The
        claim query's per-person order applies to them as to any pending delivery."""
        moved = await self._guarded(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = %(at)s,"
            f" replayed = replayed + 1, {_UNCLAIMED}"
            " WHERE id = ANY(%(ids)s) AND state = 'delivered' RETURNING id",
            {"at": now},
            ids,
            "replay",
        )
        if moved.changed:
            self.work.notify()
        return moved

    async def requeue_held(self, delivery_id: int, *, change: StateChange, now: float) -> str:
        """Save the person's state as `change` makes it and put the held delivery back in line,
        due now, in one transaction. Returns the new state as JSON text.

        Raises LookupError (no such delivery, or not held) or whatever `change` raises (then
        nothing is written).
        """
        new_state, sink = await self._transaction(_requeue_held, delivery_id, change, now)
        self.work.notify({sink})
        return new_state

    async def _guarded(
        self, sql: str, params: dict[str, Any], ids: Sequence[int], change: str
    ) -> Moved:
        """`sql` (`… WHERE id = ANY(%(ids)s) AND state = … RETURNING id`) per chunk of ids,
        each chunk one transaction with its repair row and the states of those it refused."""
        moved = Moved()
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start : start + CHUNK])
            changed, refused = await self._transaction(
                _changed_and_recorded, sql, {**params, "ids": chunk}, change
            )
            moved.changed += changed
            moved.refused.update(refused)
        return moved

    # --- rejected payloads -------------------------------------------------------------------

    async def rejected_rows(
        self, *, include_reprocessed: bool = True, ids: Sequence[int] | None = None
    ) -> list[dict[str, Any]]:
        sql = (
            "SELECT id, received_at, topic, format, payload, payload_size, reason,"
            " reprocessed_at, reprocessed_as FROM rejected WHERE TRUE"
        )
        params: list[Any] = []
        if not include_reprocessed:
            sql += " AND reprocessed_at IS NULL"
        if ids is not None:
            sql += " AND id = ANY(%s)"
            params.append(list(ids))
        async with self._reading() as conn:
            return await fetch_dicts(conn, sql + " ORDER BY id", params)

    async def mark_reprocessed(self, rejected_id: int, *, event_key: str, at: str) -> bool:
        """Mark a rejected payload as turned into an event; False if it already was."""
        return await self._transaction(_mark_reprocessed, rejected_id, event_key, at)

    async def set_rejected_cap(self, max_bytes: int) -> int:
        """The cap on rejected payloads (store.rejected_max_mb), pruned down to at once; rows
        pruned."""
        return await self._transaction(set_rejected_cap, max_bytes)

    # --- unmapped badges ---------------------------------------------------------------------

    async def unmapped_badges(self) -> list[dict[str, Any]]:
        async with self._reading() as conn:
            return await fetch_dicts(
                conn,
                "SELECT COALESCE(e.badge, 'user:' || e.user_id) AS badge,"
                " COUNT(DISTINCT e.id) AS events, MIN(e.event_time) AS first_seen,"
                " MAX(e.event_time) AS last_seen,"
                " array_agg(DISTINCT d.sink ORDER BY d.sink) AS sinks,"
                " COUNT(DISTINCT CASE WHEN e.action_inferred THEN e.id END) AS inferred"
                " FROM deliveries AS d JOIN events AS e ON e.id = d.event_id"
                " WHERE d.state = 'unmapped' GROUP BY 1 ORDER BY first_seen",
            )


# --- each inside one transaction (PostgresBase._transaction) ---------------------------------


async def _changed_and_recorded(
    conn: Connection, sql: str, params: dict[str, Any], change: str
) -> tuple[list[int], dict[int, str | None]]:
    """A guarded `UPDATE … RETURNING id`, its trace, and the states of the ids it refused."""
    cursor = await conn.execute(sql, params)
    rows: list[tuple[Any, ...]] = await cursor.fetchall()
    changed = sorted(int(row[0]) for row in rows)
    await record_repair(conn, change, changed)
    others = sorted(set(params["ids"]) - set(changed))
    refused: dict[int, str | None] = dict.fromkeys(others)
    if others:
        cursor = await conn.execute(
            "SELECT id, state FROM deliveries WHERE id = ANY(%s)", (others,)
        )
        found: list[tuple[Any, ...]] = await cursor.fetchall()
        refused.update({int(row[0]): str(row[1]) for row in found})
    return changed, refused


async def _requeue_held(
    conn: Connection, delivery_id: int, change: StateChange, now: float
) -> tuple[str, str]:
    cursor = await conn.execute(
        "SELECT sink, person, state FROM deliveries WHERE id = %s FOR UPDATE", (delivery_id,)
    )
    found: tuple[Any, ...] | None = await cursor.fetchone()
    if found is None:
        msg = f"no delivery {delivery_id}"
        raise LookupError(msg)
    sink, person, state = found
    if state != "held":
        msg = f"delivery {delivery_id} is {state}, not held"
        raise LookupError(msg)
    # Locked: a settle of the person's delivery in flight waits for this one's state.
    cursor = await conn.execute(
        "SELECT state FROM person_state WHERE sink = %s AND person = %s FOR UPDATE",
        (sink, person),
    )
    saved: tuple[Any, ...] | None = await cursor.fetchone()
    new_state = json.dumps(dict(change(_state_of(saved))))
    await conn.execute(
        "INSERT INTO person_state (sink, person, state, updated_at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (sink, person) DO UPDATE SET state = excluded.state,"
        " updated_at = excluded.updated_at",
        (sink, person, new_state, now),
    )
    await conn.execute(
        f"UPDATE deliveries SET state = 'pending', next_attempt_at = %s, {_UNCLAIMED}"
        " WHERE id = %s",
        (now, delivery_id),
    )
    await record_repair(conn, "held -> pending (person's state completed)", [delivery_id])
    return new_state, str(sink)


async def _mark_reprocessed(conn: Connection, rejected_id: int, event_key: str, at: str) -> bool:
    cursor = await conn.execute(
        "UPDATE rejected SET reprocessed_at = %s, reprocessed_as = %s"
        " WHERE id = %s AND reprocessed_at IS NULL",
        (at, event_key, rejected_id),
    )
    return cursor.rowcount == 1


def _state_of(row: tuple[Any, ...] | None) -> dict[str, Any]:
    """A person_state row's JSONB (psycopg loads it already; text if stored so)."""
    if row is None:
        return {}
    value = json.loads(row[0]) if isinstance(row[0], str) else row[0]
    return dict(value) if isinstance(value, dict) else {}
