"""Rejected payloads: what could not become an event, kept for an operator to inspect.

Bounded whatever the terminals send: a row keeps at most PAYLOAD_KEPT bytes of the payload
(with its full size and sha256), and the rows together stay under a cap (rejected_budget, one
row: the cap, a running total and a count of pruned rows). An insert that would pass the cap
first deletes the oldest rows, in the same transaction, so the pages they free are reused and
the file grows by at most the cap. Every function here runs on the store's writer thread,
inside its transaction (StoreBase._write), on plain sqlite3.
"""

from __future__ import annotations

import hashlib
import sqlite3

from bridge.delivery import EventStatus
from bridge.store.records import Rejection, Stored, utc_text

PAYLOAD_KEPT = 16 * 1024  # the documented per-message limit; enough to inspect
# What a row costs beyond its payload, topic, reason and format: its received time, hash,
# record header and the reprocess columns (the same constant as migration 6).
ROW_OVERHEAD = 160


def footprint(*, payload_kept: int, topic: str, reason: str, fmt: str) -> int:
    """The bytes one row counts against the cap."""
    return (
        payload_kept
        + len(topic.encode("utf-8", "surrogatepass"))
        + len(reason.encode("utf-8", "surrogatepass"))
        + len(fmt.encode("utf-8", "surrogatepass"))
        + ROW_OVERHEAD
    )


def insert_rejection(conn: sqlite3.Connection, item: Rejection) -> Stored:
    kept = item.payload[:PAYLOAD_KEPT]
    size = footprint(payload_kept=len(kept), topic=item.topic, reason=item.reason, fmt=item.format)
    _make_room(conn, size)
    conn.execute(
        "INSERT INTO rejected (received_at, topic, format, payload, payload_size, reason,"
        " payload_sha256, footprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            utc_text(item.received_at),
            item.topic,
            item.format,
            kept,
            len(item.payload),
            item.reason,
            hashlib.sha256(item.payload).hexdigest(),
            size,
        ),
    )
    conn.execute("UPDATE rejected_budget SET stored_bytes = stored_bytes + ? WHERE id = 1", (size,))
    return Stored(key="", status=EventStatus.REJECTED, terminal=item.terminal, reason=item.reason)


def set_rejected_cap(conn: sqlite3.Connection, max_bytes: int) -> int:
    """Set the cap and prune down to it at once (it may have been lowered); rows pruned."""
    conn.execute("UPDATE rejected_budget SET max_bytes = ? WHERE id = 1", (max_bytes,))
    return _make_room(conn, 0)


def _make_room(conn: sqlite3.Connection, size: int) -> int:
    """Delete the oldest rows until `size` more bytes fit under the cap; how many went.

    Cheap per insert: one primary-key read of the budget, and only when over the cap a scan
    from the oldest row that stops as soon as enough is freed (usually one row or two)."""
    max_bytes, stored = conn.execute(
        "SELECT max_bytes, stored_bytes FROM rejected_budget WHERE id = 1"
    ).fetchone()
    excess = stored + size - max_bytes
    if excess <= 0:
        return 0
    freed = count = 0
    last_id = None
    for row_id, row_size in conn.execute("SELECT id, footprint FROM rejected ORDER BY id"):
        freed += row_size
        count += 1
        last_id = row_id
        if freed >= excess:
            break
    if last_id is None:
        return 0
    conn.execute("DELETE FROM rejected WHERE id <= ?", (last_id,))
    conn.execute(
        "UPDATE rejected_budget SET stored_bytes = stored_bytes - ?, pruned = pruned + ?"
        " WHERE id = 1",
        (freed, count),
    )
    return count
