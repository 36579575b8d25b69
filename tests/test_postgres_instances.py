"""Bridges sharing one PostgreSQL store see each other (issue 16, item 6): each one's heartbeat,
broker connection and claims; and a daemon wakes for work another instance made due."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psycopg
import pytest

from bridge.store.postgres import PostgresStore
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import (
    API_KEY,
    canonical,
    eventually,
    publish,
    running_bridge,
    settings_from,
    write_config,
)
from tests.postgres import SERVER, fresh_database
from tests.test_cli import child_env
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


async def test_a_bridge_on_postgresql_shows_itself_and_its_database(
    broker: Mosquitto, tmp_path: Path, url: str
) -> None:
    """A daemon with store.url: a punch goes through; the page lists the instance; /readyz
    says when the database cannot be reached, and recovers with it."""
    fake = FakeGo2Clock(api_key=API_KEY)
    name = url.rsplit("/", 1)[1]
    async with running_fake_go2clock(fake) as g_url:
        extra = {"store": {"url": url, "instance_id": "gw-test"}}
        config = write_config(tmp_path, broker_port=broker.port, go2clock_url=g_url, extra=extra)
        async with running_bridge(settings_from(config)) as bridge, aiohttp.ClientSession() as web:
            base = f"http://127.0.0.1:{bridge.http_port}"
            await publish(broker.port, [("clockin/door-1/events", canonical(1))])
            await fake.wait_for_records(1, timeout=10)
            async with web.get(f"{base}/") as reply:
                page = await reply.text()
            assert '<table id="instances">' in page
            assert "<td>gw-test</td>" in page
            # The operator's view: `status` beside the running bridge, on the same database.
            out = await _cli(config, "status", "--json")
            [instance] = json.loads(out)["instances"]
            assert (instance["id"], instance["mqtt_connected"]) == ("gw-test", True)
            assert json.loads(out)["sinks"]["go2clock"]["states"] == {"delivered": 1}
            with _connections_refused(name):
                await eventually(lambda: bridge.store.write_error is not None, timeout=10)
                async with web.get(f"{base}/readyz") as reply:
                    body = await reply.json()
                assert reply.status == 503
                assert [p["check"] for p in body["problems"]] == ["database"]
            await eventually(lambda: bridge.store.write_error is None, timeout=10)


async def _cli(config: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        "--config",
        str(config),
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


@contextlib.contextmanager
def _connections_refused(database: str) -> Iterator[None]:
    """The database refuses new connections and drops the open ones (a failover, a crash)."""
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        )
    try:
        yield
    finally:
        with psycopg.connect(SERVER, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


async def test_a_claim_being_sent_is_renewed_not_taken_over(
    broker: Mosquitto, tmp_path: Path, url: str
) -> None:
    """A send that outlasts the lease (the vendor takes 5 s, the lease is 2 s): the bridge
    sending renews its claim, so the other bridge never sends the same punch."""
    fake = FakeGo2Clock(api_key=API_KEY)
    fake.delay_seconds = 5.0
    async with running_fake_go2clock(fake) as g_url:
        configs = []
        for n in (1, 2):
            home = tmp_path / f"gw-{n}"
            home.mkdir()
            extra = {
                "store": {"url": url, "instance_id": f"gw-{n}", "lease_seconds": 2},
                "mqtt": {"client_id": f"bridge-{n}"},
                "sinks": {"go2clock": {"timeout_seconds": 10}},
            }
            configs.append(
                write_config(home, broker_port=broker.port, go2clock_url=g_url, extra=extra)
            )
        async with (
            running_bridge(settings_from(configs[0])),
            running_bridge(settings_from(configs[1])),
        ):
            await publish(broker.port, [("clockin/door-1/events", canonical(1))])
            await fake.wait_for_records(1, timeout=15)
            await asyncio.sleep(1.0)
    assert len(fake.requests) == 1  # nobody sent it a second time
