"""Bridges sharing one PostgreSQL store see each other (issue 16, item 6): each one's heartbeat,
broker connection and claims; and a daemon wakes for work another instance made due."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from bridge.store.postgres import PostgresStore
from tests.postgres import fresh_database
from tests.test_store_contract import BERLIN, MORNING, claim, ingest, swipe


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_database() as database:
        yield database


async def test_each_instance_is_listed_with_its_heartbeat_and_claims(url: str) -> None:
    async with (
        PostgresStore.open(url, site_tz=BERLIN, instance="gw-1") as one,
        PostgresStore.open(url, site_tz=BERLIN, instance="gw-2") as two,
    ):
        await one.beat(mqtt_connected=True, now=1000.0)
        await two.beat(mqtt_connected=False, now=2000.0)
        await ingest(one, swipe("a", MORNING))
        assert len((await claim(two)).jobs) == 1
        await one.stopped(now=3000.0)
        listed = {row["id"]: row for row in await one.instances()}
    assert list(listed) == ["gw-2", "gw-1"]  # newest heartbeat first
    assert listed["gw-2"]["claims"] == 1
    assert (listed["gw-2"]["heartbeat_at"], listed["gw-2"]["mqtt_connected"]) == (2000.0, False)
    assert (listed["gw-1"]["claims"], listed["gw-1"]["stopped_at"]) == (0, 3000.0)


async def test_a_daemon_wakes_for_work_another_instance_stored(url: str) -> None:
    async with (
        PostgresStore.open(url, site_tz=BERLIN, instance="gw-1") as watcher,
        PostgresStore.open(url, site_tz=BERLIN, instance="gw-2") as other,
    ):
        woken = watcher.work.event("go2clock")
        woken.clear()
        watch = asyncio.create_task(watcher.watch_other_writers(interval=0.05))
        try:
            await asyncio.sleep(0.2)
            assert not woken.is_set()  # nothing due yet
            await ingest(other, swipe("a", MORNING))
            await asyncio.wait_for(woken.wait(), timeout=2)
        finally:
            watch.cancel()
