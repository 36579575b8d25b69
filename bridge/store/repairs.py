"""A trace of operator repairs: what a command changed, when and by whom, for the daemon's log.

A repair runs in another process than the daemon, so its log line would otherwise land in the
operator's terminal only. Each guarded state change adds a `repairs` row in its own
transaction; the daemon reads the new rows when it notices another process's commit and logs
them as `repair.applied`, in the journal beside everything else it did.
"""

from __future__ import annotations

import getpass
import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import aiosqlite

KEPT = 10_000


def record_repair(conn: sqlite3.Connection, change: str, deliveries: Sequence[int]) -> None:
    """Inside the transaction that made the change (nothing is recorded that did not happen)."""
    if not deliveries:
        return
    conn.execute(
        "INSERT INTO repairs (at, by_user, change, deliveries) VALUES (?, ?, ?, ?)",
        (time.time(), _user(), change, json.dumps(sorted(deliveries))),
    )
    conn.execute("DELETE FROM repairs WHERE id <= (SELECT MAX(id) FROM repairs) - ?", (KEPT,))


async def repairs_after(db: aiosqlite.Connection, last_id: int) -> list[dict[str, Any]]:
    """The repairs recorded after `last_id`, oldest first."""
    cursor = await db.execute(
        "SELECT id, at, by_user, change, deliveries FROM repairs WHERE id > ? ORDER BY id",
        (last_id,),
    )
    return [dict(row) for row in await cursor.fetchall()]


async def last_repair_id(db: aiosqlite.Connection) -> int:
    cursor = await db.execute("SELECT COALESCE(MAX(id), 0) FROM repairs")
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return "unknown"
