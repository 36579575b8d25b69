"""The trace of operator repairs on PostgreSQL (as bridge.store.repairs): a `repairs` row per
guarded state change, written in the transaction that made it, for the daemons to log.

A row's id comes from a sequence, so two repairs committing at once may become visible out of
id order; a reader that remembers the last id it saw could skip the earlier one. Repairs are
operator commands, seconds apart, and the row is a log line, not state: accepted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from bridge.store.postgres.connection import Connection, PostgresBase
from bridge.store.postgres.rows import fetch_dicts
from bridge.store.repairs import KEPT, _user


async def record_repair(conn: Connection, change: str, deliveries: Sequence[int]) -> None:
    """Inside the transaction that made the change (nothing is recorded that did not happen)."""
    if not deliveries:
        return
    await conn.execute(
        "INSERT INTO repairs (at, by_user, change, deliveries) VALUES (%s, %s, %s, %s)",
        (time.time(), _user(), change, json.dumps(sorted(deliveries))),
    )
    await conn.execute(
        "DELETE FROM repairs WHERE id <= (SELECT MAX(id) FROM repairs) - %s", (KEPT,)
    )


class PostgresRepairs(PostgresBase):
    async def repairs_after(self, last_id: int) -> list[dict[str, Any]]:
        """The repairs recorded after `last_id`, oldest first."""
        async with self._reading() as conn:
            return await fetch_dicts(
                conn,
                "SELECT id, at, by_user, change, deliveries FROM repairs WHERE id > %s ORDER BY id",
                (last_id,),
            )

    async def last_repair_id(self) -> int:
        async with self._reading() as conn:
            cursor = await conn.execute("SELECT COALESCE(MAX(id), 0) FROM repairs")
            row: tuple[Any, ...] | None = await cursor.fetchone()
        return int(row[0]) if row else 0
