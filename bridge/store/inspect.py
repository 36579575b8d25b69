"""Read-only views for status, the status page and metrics, on the store's reader connection."""

from __future__ import annotations

from bridge.store.connection import StoreBase


class InspectMixin(StoreBase):
    async def recent_events(self, limit: int = 20) -> list[dict[str, object]]:
        rows = await self._reader.execute_fetchall(
            "SELECT key, terminal, subject, action, event_time, status FROM events"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [dict(row) for row in rows]

    async def recent_errors(self, limit: int = 10) -> list[dict[str, object]]:
        rows = await self._reader.execute_fetchall(
            "SELECT d.sink, d.state, d.attempts, d.last_error, e.key FROM deliveries AS d"
            " JOIN events AS e ON e.id = d.event_id WHERE d.last_error IS NOT NULL"
            " AND d.state IN ('pending', 'dead', 'held') ORDER BY d.id DESC LIMIT ?",
            (limit,),
        )
        return [dict(row) for row in rows]

    async def status(self, *, now: float) -> dict[str, object]:
        sinks: dict[str, dict[str, object]] = {}
        for row in await self._reader.execute_fetchall(
            "SELECT sink, state, COUNT(*), MIN(created_at) FROM deliveries GROUP BY sink, state"
        ):
            entry = sinks.setdefault(row[0], {"states": {}, "oldest_pending_seconds": None})
            entry["states"][row[1]] = row[2]  # type: ignore[index]
            if row[1] in ("pending", "inflight"):
                age = now - row[3]
                previous = entry["oldest_pending_seconds"]
                entry["oldest_pending_seconds"] = max(age, previous or 0.0)
        events = {
            row[0]: row[1]
            for row in await self._reader.execute_fetchall(
                "SELECT status, COUNT(*) FROM events GROUP BY status"
            )
        }
        rejected = (await self._reader.execute_fetchall("SELECT COUNT(*) FROM rejected"))[0][0]
        retried = (
            await self._reader.execute_fetchall(
                "SELECT COUNT(*) FROM deliveries WHERE attempts > 1"
            )
        )[0][0]
        return {"events": events, "rejected": rejected, "retried": retried, "sinks": sinks}
