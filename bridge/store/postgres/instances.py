"""The bridges sharing one PostgreSQL store: heartbeats, and a watch for work others made due.

Each daemon upserts its row every few seconds (`beat`); `status` and the page list every
instance with its last heartbeat, its broker connection and the claims it holds. An instance
whose heartbeat stopped is dead or cut off: its claims come back to the others when their
leases run out (bridge.store.postgres.queue), whatever its row says.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import structlog

from bridge.store.postgres.connection import PostgresBase, execute
from bridge.store.records import StoreWriteError

log = structlog.get_logger("bridge.store")

# How often a running daemon beats; a restarted one waits two beats to be sure the id is free.
HEARTBEAT_SECONDS = 2.0
# How often a daemon looks for deliveries made due by someone else (another instance's ingest,
# an operator's repair, an expired lease). No LISTEN: it does not survive PgBouncer.
WORK_POLL_SECONDS = 2.0


class InstanceInUseError(Exception):
    """Another running bridge has this instance id."""


class PostgresInstances(PostgresBase):
    async def take_identity(self, *, beat_seconds: float = HEARTBEAT_SECONDS) -> None:
        """Start as this instance: refuse if another bridge beats with the same id; a fresh
        heartbeat without a clean stop is waited out for two beats (a restart after a crash
        finds its own last beat)."""
        last = await self._heartbeat_of(self.instance)
        if last is not None and time.time() - last < 2 * beat_seconds:
            await asyncio.sleep(2 * beat_seconds)
            if await self._heartbeat_of(self.instance) != last:
                msg = (
                    f"another bridge runs as instance {self.instance!r} on this database:"
                    " give each bridge its own store.instance_id"
                )
                raise InstanceInUseError(msg)
        await self.beat(mqtt_connected=False)

    async def _heartbeat_of(self, instance: str) -> float | None:
        async with self._reading() as conn:
            row = await (
                await conn.execute(
                    "SELECT heartbeat_at FROM instances WHERE id = %s AND stopped_at IS NULL",
                    (instance,),
                )
            ).fetchone()
        return None if row is None else float(row[0])

    async def beat(self, *, mqtt_connected: bool, now: float | None = None) -> None:
        at = time.time() if now is None else now
        await self._transaction(
            execute,
            "INSERT INTO instances (id, host, started_at, heartbeat_at, mqtt_connected)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
            " heartbeat_at = excluded.heartbeat_at, mqtt_connected = excluded.mqtt_connected,"
            " stopped_at = NULL",
            (self.instance, socket.gethostname(), at, at, mqtt_connected),
        )

    async def stopped(self, *, now: float | None = None) -> None:
        """A clean stop: the row says so (its claims were handed back already)."""
        at = time.time() if now is None else now
        await self._transaction(
            execute,
            "UPDATE instances SET stopped_at = %s, mqtt_connected = FALSE WHERE id = %s",
            (at, self.instance),
        )

    async def instances(self) -> list[dict[str, Any]]:
        """Every instance: id, host, started_at, heartbeat_at, mqtt_connected, stopped_at, and
        the deliveries it holds in flight (`claims`), newest heartbeat first."""
        async with self._reading() as conn:
            cursor = await conn.execute(
                "SELECT i.id, i.host, i.started_at, i.heartbeat_at, i.mqtt_connected,"
                " i.stopped_at, COUNT(d.id) FROM instances AS i LEFT JOIN deliveries AS d"
                " ON d.claimed_by = i.id AND d.state = 'inflight'"
                " GROUP BY i.id ORDER BY i.heartbeat_at DESC"
            )
            names = ("id", "host", "started_at", "heartbeat_at", "mqtt_connected", "stopped_at")
            return [
                {**dict(zip(names, row[:6], strict=True)), "claims": row[6]}
                for row in await cursor.fetchall()
            ]

    async def watch_other_writers(self, *, interval: float = WORK_POLL_SECONDS) -> None:
        """Wake the dispatchers when something is due that this instance did not make so: a
        pending delivery due now (another instance stored it, an operator requeued it) or a
        claim whose lease ran out; and log the operators' repairs (repair.applied), as the
        SQLite daemon does. A few index lookups per look."""
        last_repair = await self._repairs_seen()
        while True:
            await asyncio.sleep(interval)
            try:
                if await self._work_due(time.time()):
                    self.work.notify()
                last_repair = await self._log_repairs_after(last_repair)
            except StoreWriteError:
                continue  # the database is away: readiness says so; look again later

    async def _work_due(self, now: float) -> bool:
        async with self._reading() as conn:
            cursor = await conn.execute(
                "SELECT EXISTS (SELECT 1 FROM deliveries WHERE state = 'pending'"
                " AND next_attempt_at <= %s) OR EXISTS (SELECT 1 FROM deliveries"
                " WHERE state = 'inflight' AND lease_until < %s)",
                (now, now),
            )
            row = await cursor.fetchone()
        return row is not None and bool(row[0])

    async def _repairs_seen(self) -> int:
        try:
            async with self._reading() as conn:
                row = await (
                    await conn.execute("SELECT COALESCE(MAX(id), 0) FROM repairs")
                ).fetchone()
        except StoreWriteError:
            return 0
        return 0 if row is None else int(row[0])

    async def _log_repairs_after(self, last_id: int) -> int:
        async with self._reading() as conn:
            cursor = await conn.execute(
                "SELECT id, change, by_user, deliveries FROM repairs WHERE id > %s ORDER BY id",
                (last_id,),
            )
            rows = await cursor.fetchall()
        for repair_id, change, by_user, deliveries in rows:
            ids = json.loads(deliveries)
            log.info("repair.applied", change=change, by=by_user, deliveries=len(ids), ids=ids[:20])
            last_id = repair_id
        return last_id
