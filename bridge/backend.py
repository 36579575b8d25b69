"""Which store the daemon runs on: the SQLite file of one gateway (`store.path`), or the
PostgreSQL database several bridges share (`store.url`), and what only the shared one needs:
an identity among the others, its heartbeat, and a clean goodbye."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog

from bridge.config import Settings
from bridge.store import DaemonStore, Store
from bridge.store.postgres import PostgresStore
from bridge.store.postgres.instances import HEARTBEAT_SECONDS

log = structlog.get_logger("bridge.backend")

# How soon a change of the broker connection reaches the instances table.
STATE_POLL_SECONDS = 0.2


@contextlib.asynccontextmanager
async def opened_store(settings: Settings) -> AsyncIterator[DaemonStore]:
    """The daemon's store, open and migrated; on PostgreSQL also this instance's identity
    taken (a second running bridge with the same store.instance_id is refused)."""
    config = settings.store
    rules = settings.inference.rules(
        tz=settings.site.tz, window_seconds=settings.dedupe.window_seconds
    )
    if config.url is None:
        async with Store.open(
            config.path,
            site_tz=settings.site.tz,
            window_seconds=settings.dedupe.window_seconds,
            inference=rules,
            settle_seconds=settings.dispatch.settle_seconds,
            commit_wait_seconds=config.commit_wait_seconds,
            rejected_max_bytes=config.rejected_max_mb * 1024 * 1024,
        ) as store:
            yield store
        return
    async with PostgresStore.open(
        config.url,
        site_tz=settings.site.tz,
        window_seconds=settings.dedupe.window_seconds,
        inference=rules,
        settle_seconds=settings.dispatch.settle_seconds,
        instance=config.instance_id,
        lease_seconds=config.lease_seconds,
        password=None if config.password is None else config.password.get_secret_value(),
    ) as shared:
        await shared.take_identity()
        pruned = await shared.set_rejected_cap(config.rejected_max_mb * 1024 * 1024)
        if pruned:
            log.info("rejected.pruned", rows=pruned, reason="store.rejected_max_mb lowered")
        log.info("store.instance", instance=shared.instance, lease_seconds=config.lease_seconds)
        try:
            yield shared
        finally:
            with contextlib.suppress(Exception):  # the database may be what failed
                await shared.stopped()


async def beat_forever(store: DaemonStore, mqtt_connected: Callable[[], bool]) -> None:
    """On a shared store, this instance's heartbeat (for `status` and the others' view):
    every HEARTBEAT_SECONDS, and at once when the broker connection comes or goes, so the
    others never show a stale state for a whole beat; nothing on SQLite."""
    if not isinstance(store, PostgresStore):
        return
    loop = asyncio.get_running_loop()
    beaten: bool | None = None
    next_beat = 0.0
    while True:
        connected = mqtt_connected()
        if connected != beaten or loop.time() >= next_beat:
            beaten = connected  # a failed beat is retried at the next regular one, not at once
            try:
                await store.beat(mqtt_connected=connected)
            except Exception as err:  # noqa: BLE001 - the loop's boundary: the next beat retries
                log.warning("store.heartbeat_failed", error=str(err))
            next_beat = loop.time() + HEARTBEAT_SECONDS
        await asyncio.sleep(STATE_POLL_SECONDS)
