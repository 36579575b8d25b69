"""Rejected payloads on PostgreSQL, bounded as on SQLite (bridge.store.rejected): a row keeps at
most PAYLOAD_KEPT bytes of the payload, and the rows together stay under the cap recorded in
rejected_budget; an insert that would pass it first deletes the oldest rows, in its own
transaction. Every insert locks the one budget row first (`FOR UPDATE`): instances rejecting
at once take turns, so the running total and the pruning never race. Ingest takes its
per-person advisory locks before any rejection of its batch, so this lock is always last.
"""

from __future__ import annotations

import hashlib
from typing import Any

from bridge.delivery import EventStatus
from bridge.store.postgres.connection import Connection
from bridge.store.records import Rejection, Stored
from bridge.store.rejected import PAYLOAD_KEPT, footprint

# Rows read per step while looking for the oldest ones to prune (usually one or two are enough).
_PRUNE_STEP = 64


async def insert_rejection(conn: Connection, item: Rejection) -> Stored:
    """Keep a payload that could not become an event, within the budget (in `conn`'s
    transaction)."""
    kept = item.payload[:PAYLOAD_KEPT]
    size = footprint(payload_kept=len(kept), topic=item.topic, reason=item.reason, fmt=item.format)
    await _make_room(conn, size)
    await conn.execute(
        "INSERT INTO rejected (received_at, topic, format, payload, payload_size, reason,"
        " payload_sha256, footprint) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            item.received_at,
            item.topic,
            item.format,
            kept,
            len(item.payload),
            item.reason,
            hashlib.sha256(item.payload).hexdigest(),
            size,
        ),
    )
    await conn.execute(
        "UPDATE rejected_budget SET stored_bytes = stored_bytes + %s,"
        " stored_rows = stored_rows + 1 WHERE id = 1",
        (size,),
    )
    return Stored("", EventStatus.REJECTED, reason=item.reason, terminal=item.terminal or None)


async def set_rejected_cap(conn: Connection, max_bytes: int) -> int:
    """Set the cap and prune down to it at once (it may have been lowered); rows pruned."""
    await conn.execute("UPDATE rejected_budget SET max_bytes = %s WHERE id = 1", (max_bytes,))
    return await _make_room(conn, 0)


async def rejected_budget(conn: Connection) -> dict[str, int]:
    """The counts `status` shows, under the names of QueueStatus."""
    cursor = await conn.execute(
        "SELECT stored_rows, stored_bytes, max_bytes, pruned FROM rejected_budget WHERE id = 1"
    )
    row: tuple[Any, ...] | None = await cursor.fetchone()
    rows, stored, max_bytes, pruned = row or (0, 0, 0, 0)
    return {
        "rejected": int(rows),
        "rejected_bytes": int(stored),
        "rejected_max_bytes": int(max_bytes),
        "rejected_pruned": int(pruned),
    }


async def _make_room(conn: Connection, size: int) -> int:
    """Delete the oldest rows until `size` more bytes fit under the cap; how many went. The
    budget row stays locked until the transaction ends."""
    cursor = await conn.execute(
        "SELECT max_bytes, stored_bytes FROM rejected_budget WHERE id = 1 FOR UPDATE"
    )
    budget: tuple[Any, ...] | None = await cursor.fetchone()
    if budget is None:
        return 0
    excess = int(budget[1]) + size - int(budget[0])
    if excess <= 0:
        return 0
    freed = count = 0
    last_id = 0
    while freed < excess:
        cursor = await conn.execute(
            "SELECT id, footprint FROM rejected WHERE id > %s ORDER BY id LIMIT %s",
            (last_id, _PRUNE_STEP),
        )
        rows: list[tuple[Any, ...]] = await cursor.fetchall()
        for row_id, row_size in rows:
            freed += row_size
            count += 1
            last_id = row_id
            if freed >= excess:
                break
        if len(rows) < _PRUNE_STEP:
            break
    if count == 0:
        return 0
    await conn.execute("DELETE FROM rejected WHERE id <= %s", (last_id,))
    await conn.execute(
        "UPDATE rejected_budget SET stored_bytes = stored_bytes - %s,"
        " stored_rows = stored_rows - %s, pruned = pruned + %s WHERE id = 1",
        (freed, count, count),
    )
    return count
