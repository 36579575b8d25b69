"""Operator repairs: inspect and move deliveries and rejected payloads by hand.

Safe beside a running daemon: every change is one short `BEGIN IMMEDIATE` transaction, and every
state change is an UPDATE guarded by the state the operator expects (`WHERE id = ? AND state =
'dead'`), so a row the daemon moved in the meantime is reported, never clobbered. Nothing is
deleted: a dropped delivery and a reprocessed payload stay for inspection.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.store.connection import StoreBase, fetch_all
from bridge.store.repairs import record_repair

# Rows per UPDATE in bulk changes: each chunk is its own short transaction, so the daemon's
# claims and settles get in between.
CHUNK = 500

_DELIVERY_SQL = """
SELECT d.id, d.sink, d.state, d.person, d.attempts, d.last_error, d.outcome, d.replayed,
       d.next_attempt_at, d.created_at, d.settled_at, e.key AS event_key, e.terminal,
       e.badge, e.user_id, e.action, e.action_inferred, e.event_time, e.status AS event_status,
       e.received_at, e.device_time
FROM deliveries AS d JOIN events AS e ON e.id = d.event_id
"""

StateChange = Callable[[Mapping[str, Any]], Mapping[str, Any]]


@dataclass
class Moved:
    """What a guarded state change did: the ids changed, and the others with their state
    (None: no such delivery)."""

    changed: list[int] = field(default_factory=list)
    refused: dict[int, str | None] = field(default_factory=dict)


class AdminMixin(StoreBase):
    # --- deliveries: read ------------------------------------------------------------------

    async def deliveries_in(
        self, state: str, *, sink: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        where, params = "WHERE d.state = ?", [state]
        if sink is not None:
            where += " AND d.sink = ?"
            params.append(sink)
        sql = f"{_DELIVERY_SQL} {where} ORDER BY d.event_time, d.id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = await fetch_all(self._db, sql, params)
        return [dict(row) for row in rows]

    async def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        rows = await fetch_all(self._db, f"{_DELIVERY_SQL} WHERE d.id = ?", (delivery_id,))
        return dict(rows[0]) if rows else None

    async def person_state(self, sink: str, person: str | None) -> dict[str, Any]:
        rows = await fetch_all(
            self._db, "SELECT state FROM person_state WHERE sink = ? AND person = ?", (sink, person)
        )
        return json.loads(rows[0][0]) if rows else {}

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
        moved = Moved()
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start : start + CHUNK])
            changed = await self._move_chunk(
                chunk, expect=expect, to=to, reset_attempts=reset_attempts, now=now
            )
            moved.changed += changed
            moved.refused.update(await self._states_of(set(chunk) - set(changed)))
        if moved.changed and to == "pending":
            self.work.notify()
        return moved

    async def _move_chunk(
        self,
        ids: list[int],
        *,
        expect: str,
        to: str,
        reset_attempts: bool,
        now: float | None,
    ) -> list[int]:
        at = time.time() if now is None else now
        sets = ["state = :to"]
        if to == "pending":
            sets.append("next_attempt_at = :at")
        else:
            sets.append("settled_at = :at")
        if reset_attempts:
            sets.append("attempts = 0")
        marks = ",".join(f":id{n}" for n in range(len(ids)))
        params: dict[str, Any] = {"to": to, "at": at, "expect": expect}
        params.update({f"id{n}": delivery_id for n, delivery_id in enumerate(ids)})
        sql = (
            f"UPDATE deliveries SET {', '.join(sets)}"
            f" WHERE id IN ({marks}) AND state = :expect RETURNING id"
        )
        return await self._write(_changed_and_recorded, sql, params, f"{expect} -> {to}")

    async def _states_of(self, ids: Iterable[int]) -> dict[int, str | None]:
        wanted = sorted(ids)
        found: dict[int, str | None] = dict.fromkeys(wanted)
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            rows = await fetch_all(
                self._db,
                f"SELECT id, state FROM deliveries WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update({row[0]: row[1] for row in rows})
        return found

    async def ids_in(self, state: str, *, sink: str | None = None) -> list[int]:
        sql, params = "SELECT id FROM deliveries WHERE state = ?", [state]
        if sink is not None:
            sql += " AND sink = ?"
            params.append(sink)
        rows = await fetch_all(self._db, sql + " ORDER BY event_time, id", params)
        return [row[0] for row in rows]

    async def requeue_held(self, delivery_id: int, *, change: StateChange, now: float) -> str:
        """Save the person's state as `change` makes it and put the held delivery back in line,
        due now, in one transaction. Returns the new state as JSON text.

        Raises LookupError (no such delivery, or not held) or whatever `change` raises (then
        nothing is written).
        """
        new_state, sink = await self._write(_requeue_held, delivery_id, change, now)
        self.work.notify({sink})
        return new_state

    async def release_held(self, ids: Sequence[int], *, now: float) -> Moved:
        """Send held deliveries as they are: due now, and allowed out of order (a late punch
        goes although a later one of the person was applied; the operator decided). One
        whose person is not known at the sink yet waits as unmapped."""
        moved = Moved()
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start : start + CHUNK])
            sql = (
                "UPDATE deliveries SET state = IIF(person IS NULL, 'unmapped', 'pending'),"
                " next_attempt_at = ?, out_of_order = 1"
                f" WHERE id IN ({','.join('?' * len(chunk))}) AND state = 'held'"
                " RETURNING id"
            )
            changed = await self._write(
                _changed_and_recorded, sql, [now, *chunk], "held -> pending (released as is)"
            )
            moved.changed += changed
            moved.refused.update(await self._states_of(set(chunk) - set(changed)))
        if moved.changed:
            self.work.notify()
        return moved

    async def delivered_between(self, sink: str, *, since: str, until: str | None) -> list[int]:
        """Ids of the sink's delivered deliveries with since <= event_time < until (UTC text)."""
        sql = "SELECT id FROM deliveries WHERE sink = ? AND state = 'delivered' AND event_time >= ?"
        params = [sink, since]
        if until is not None:
            sql += " AND event_time < ?"
            params.append(until)
        rows = await fetch_all(self._db, sql + " ORDER BY event_time, id", params)
        return [row[0] for row in rows]

    async def replay(self, ids: Sequence[int], *, now: float) -> Moved:
        """Send delivered deliveries again: back to pending, due now, `replayed` counted. The
        claim query's per-person order applies to them as to any pending delivery."""
        moved = Moved()
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start : start + CHUNK])
            sql = (
                "UPDATE deliveries SET state = 'pending', next_attempt_at = ?,"
                " replayed = replayed + 1"
                f" WHERE id IN ({','.join('?' * len(chunk))}) AND state = 'delivered'"
                " RETURNING id"
            )
            changed = await self._write(_changed_and_recorded, sql, [now, *chunk], "replay")
            moved.changed += changed
            moved.refused.update(await self._states_of(set(chunk) - set(changed)))
        if moved.changed:
            self.work.notify()
        return moved

    # --- rejected payloads -------------------------------------------------------------------

    async def rejected_rows(
        self, *, include_reprocessed: bool = True, ids: Sequence[int] | None = None
    ) -> list[dict[str, Any]]:
        sql = (
            "SELECT id, received_at, topic, format, payload, payload_size, reason,"
            " reprocessed_at, reprocessed_as FROM rejected WHERE 1 = 1"
        )
        params: list[Any] = []
        if not include_reprocessed:
            sql += " AND reprocessed_at IS NULL"
        if ids is not None:
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            params += list(ids)
        rows = await fetch_all(self._db, sql + " ORDER BY id", params)
        return [dict(row) for row in rows]

    async def mark_reprocessed(self, rejected_id: int, *, event_key: str, at: str) -> bool:
        """Mark a rejected payload as turned into an event; False if it already was."""
        return await self._write(_mark_reprocessed, rejected_id, event_key, at)

    # --- unmapped badges ---------------------------------------------------------------------

    async def unmapped_badges(self) -> list[dict[str, Any]]:
        rows = await fetch_all(
            self._db,
            "SELECT COALESCE(e.badge, 'user:' || e.user_id) AS badge,"
            " COUNT(DISTINCT e.id) AS events, MIN(e.event_time) AS first_seen,"
            " MAX(e.event_time) AS last_seen, GROUP_CONCAT(DISTINCT d.sink) AS sinks,"
            " COUNT(DISTINCT CASE WHEN e.action_inferred THEN e.id END) AS inferred"
            " FROM deliveries AS d JOIN events AS e ON e.id = d.event_id"
            " WHERE d.state = 'unmapped' GROUP BY 1 ORDER BY first_seen",
        )
        result = []
        for row in rows:
            entry = dict(row)
            entry["sinks"] = sorted(str(entry["sinks"]).split(","))
            result.append(entry)
        return result


# --- on the writer's thread, each inside the one write path (StoreBase._write) ----------------


def _changed_and_recorded(
    conn: sqlite3.Connection, sql: str, params: Sequence[Any] | Mapping[str, Any], change: str
) -> list[int]:
    """A guarded `UPDATE … RETURNING id`, and its trace in the same transaction."""
    changed = sorted(row[0] for row in conn.execute(sql, params).fetchall())
    record_repair(conn, change, changed)
    return changed


def _requeue_held(
    conn: sqlite3.Connection, delivery_id: int, change: StateChange, now: float
) -> tuple[str, str]:
    found = conn.execute(
        "SELECT d.sink, d.person, d.state, e.status FROM deliveries AS d"
        " JOIN events AS e ON e.id = d.event_id WHERE d.id = ?",
        (delivery_id,),
    ).fetchone()
    if found is None:
        msg = f"no delivery {delivery_id}"
        raise LookupError(msg)
    sink, person, state, event_status = found
    if state != "held":
        msg = f"delivery {delivery_id} is {state}, not held"
        raise LookupError(msg)
    if event_status == "held":  # its time is the device's implausible one: no shift to fix
        msg = (
            f"delivery {delivery_id} is held for its implausible device time, not for a shift:"
            " complete it with --use-received-time (or drop it)"
        )
        raise LookupError(msg)
    saved = conn.execute(
        "SELECT state FROM person_state WHERE sink = ? AND person = ?", (sink, person)
    ).fetchone()
    new_state = json.dumps(dict(change(json.loads(saved[0]) if saved else {})))
    conn.execute(
        "INSERT INTO person_state (sink, person, state, updated_at) VALUES (?,?,?,?)"
        " ON CONFLICT (sink, person) DO UPDATE SET state = excluded.state,"
        " updated_at = excluded.updated_at",
        (sink, person, new_state, now),
    )
    conn.execute(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = ? WHERE id = ?",
        (now, delivery_id),
    )
    record_repair(conn, "held -> pending (person's state completed)", [delivery_id])
    return new_state, sink


def _mark_reprocessed(conn: sqlite3.Connection, rejected_id: int, event_key: str, at: str) -> bool:
    cursor = conn.execute(
        "UPDATE rejected SET reprocessed_at = ?, reprocessed_as = ?"
        " WHERE id = ? AND reprocessed_at IS NULL",
        (at, event_key, rejected_id),
    )
    return cursor.rowcount == 1
