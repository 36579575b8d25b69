"""Rows as the SQLite store returns them to the commands: dicts by column name, with event
and receipt times as its UTC text (bridge.store.records.utc_text), so a command prints the
same whichever store it reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from bridge.store.postgres.connection import Connection
from bridge.store.records import utc_text

# Columns that the SQLite store keeps as UTC text and this one as timestamptz.
TIME_COLUMNS = frozenset({"event_time", "received_at", "first_seen", "last_seen"})
# Columns that the SQLite store keeps as 0/1 and this one as boolean (JSON output prints them).
FLAG_COLUMNS = frozenset({"action_inferred"})


async def fetch_dicts(
    conn: Connection, sql: str, params: Sequence[object] | dict[str, object] = ()
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(sql, params)
        return [as_sqlite_row(row) for row in await cursor.fetchall()]


def as_sqlite_row(row: dict[str, Any]) -> dict[str, Any]:
    for key, value in row.items():
        if key in TIME_COLUMNS and isinstance(value, datetime):
            row[key] = utc_text(value)
        elif key in FLAG_COLUMNS and isinstance(value, bool):
            row[key] = int(value)
    return row
