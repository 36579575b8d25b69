"""Read-only views for status, the status page and metrics, on the store's reader connection."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from bridge.store.connection import StoreBase, fetch_all, give_sidecars_to_owner
from bridge.store.records import QueueStatus, SinkQueue
from bridge.store.schema import MIGRATIONS

# What `rejected list` shows of a row: never the payload (a page of 50 reads no blob).
_REJECTED_SUMMARY = (
    "id, received_at, topic, format, payload_size, reason, reprocessed_at, reprocessed_as"
)
# A sink's oldest undelivered delivery: a seek on the partial index deliveries_waiting.
_OLDEST_WAITING = (
    "SELECT MIN(created_at) FROM deliveries WHERE sink = ? AND state IN ('pending', 'inflight')"
)


class InspectMixin(StoreBase):
    async def recent_events(self, limit: int = 20) -> list[dict[str, object]]:
        rows = await fetch_all(
            self._reader,
            "SELECT key, terminal, subject, action, action_inferred, event_time, status"
            " FROM events ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [dict(row) for row in rows]

    async def recent_errors(self, limit: int = 10) -> list[dict[str, object]]:
        rows = await fetch_all(
            self._reader,
            "SELECT d.sink, d.state, d.attempts, d.last_error, e.key FROM deliveries AS d"
            " JOIN events AS e ON e.id = d.event_id WHERE d.last_error IS NOT NULL"
            " AND d.state IN ('pending', 'dead', 'held') ORDER BY d.id DESC LIMIT ?",
            (limit,),
        )
        return [dict(row) for row in rows]

    async def status(self, *, now: float) -> QueueStatus:
        """From the counters the triggers keep (migration 8) and one indexed MIN per sink with
        undelivered work: no table is scanned, however much history the database holds."""
        sinks: dict[str, SinkQueue] = {}
        events: dict[str, int] = {}
        retried = inferred = 0
        for name, sink, state, n in await fetch_all(
            self._reader, "SELECT name, sink, state, n FROM counters WHERE n != 0"
        ):
            if name == "events":
                events[state] = n
            elif name == "deliveries":
                entry = sinks.setdefault(sink, {"states": {}, "oldest_pending_seconds": None})
                entry["states"][state] = n
            elif name == "retried":
                retried = n
            elif name == "inferred":
                inferred = n
        for sink, entry in sinks.items():
            if entry["states"].keys() & {"pending", "inflight"}:
                [[oldest]] = await fetch_all(self._reader, _OLDEST_WAITING, (sink,))
                entry["oldest_pending_seconds"] = None if oldest is None else now - oldest
        [budget] = await fetch_all(
            self._reader,
            "SELECT stored_bytes, max_bytes, pruned, stored_rows FROM rejected_budget WHERE id = 1",
        )
        return {
            "events": events,
            "rejected": budget[3],
            "rejected_bytes": budget[0],
            "rejected_max_bytes": budget[1],
            "rejected_pruned": budget[2],
            "retried": retried,
            "inferred": inferred,
            "sinks": sinks,
        }

    async def rejected_page(
        self, *, limit: int, before: int | None = None, include_reprocessed: bool = True
    ) -> list[dict[str, Any]]:
        """Rejected rows newest first, at most `limit`, ids below `before`; without payloads."""
        sql = f"SELECT {_REJECTED_SUMMARY} FROM rejected WHERE id < ?"
        if not include_reprocessed:
            sql += " AND reprocessed_at IS NULL"
        params = (2**63 - 1 if before is None else before, limit)
        rows = await fetch_all(self._reader, sql + " ORDER BY id DESC LIMIT ?", params)
        return [dict(row) for row in rows]

    async def rejected_row(self, rejected_id: int) -> dict[str, Any] | None:
        """One rejected row in full: payload (as kept), its size and hash."""
        rows = await fetch_all(
            self._reader,
            f"SELECT {_REJECTED_SUMMARY}, payload, payload_sha256 FROM rejected WHERE id = ?",
            (rejected_id,),
        )
        return dict(rows[0]) if rows else None


def database_summary(path: Path) -> dict[str, Any]:
    """What is at `path` for `check-config`: whether it exists, its schema, and what is wrong,
    read without creating, checking or migrating anything (the daemon's own work)."""
    info: dict[str, Any] = {"path": str(path), "exists": path.exists()}
    if not path.exists():
        return info
    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=5)
        ) as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as err:
        info["problem"] = f"not readable as SQLite: {err}"
        return info
    finally:
        give_sidecars_to_owner(path)
    info["schema"] = version
    if version > len(MIGRATIONS):
        info["problem"] = f"schema {version} is newer than this release ({len(MIGRATIONS)})"
    return info
