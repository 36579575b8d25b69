"""One vendor having a very bad day, in sequence: unreachable (connection refused), flapping
(up and down every second), answering slower than the timeout, and losing answers (record
written, reply dropped). Afterwards every punch is there exactly once, in per-person order,
nothing is pending and the bridge reports ready."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from tests.broker import Mosquitto, free_port
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.faults.common import HEAVY, assert_exactly_once_in_order
from tests.harness import API_KEY, canonical, publish, running_bridge, settings_from, write_config

TOPIC = "clockin/bay/events"
PHASE_SECONDS = 60.0 if HEAVY else 3.0  # the heavy run keeps the vendor down for minutes
BATCH = 150


@pytest.mark.slow
async def test_outage_flapping_slow_and_lost_answers(broker: Mosquitto, tmp_path: Path):
    port = free_port()
    fake = FakeGo2Clock(api_key=API_KEY)
    config = write_config(
        tmp_path,
        broker_port=broker.port,
        go2clock_url=f"http://127.0.0.1:{port}",
        extra={"sinks": {"go2clock": {"concurrency": 8, "timeout_seconds": 0.5}}},
    )
    settings = settings_from(config)
    sent = 0

    async def more() -> None:
        nonlocal sent
        await publish(broker.port, [(TOPIC, canonical(n)) for n in range(sent, sent + BATCH)])
        sent += BATCH

    async with running_bridge(settings) as bridge:
        # 1. Unreachable: nothing listens on the port (connection refused).
        await more()
        await asyncio.sleep(PHASE_SECONDS * (5 if HEAVY else 1))
        # 2. Flapping: up for a second, down for a second.
        for _ in range(int(PHASE_SECONDS)):
            async with running_fake_go2clock(fake, port=port):
                await more()
                await asyncio.sleep(1.0)
            await asyncio.sleep(1.0)
        async with running_fake_go2clock(fake, port=port):
            # 3. Slower than the 0.5 s timeout: the punch is written late, the bridge retries.
            fake.delay_seconds = 0.8
            await more()
            await asyncio.sleep(PHASE_SECONDS)
            fake.delay_seconds = 0.0
            # 4. Lost answers: written, but the reply never comes back.
            fake.lose_answers = 40
            await more()
            await fake.wait_for_records(sent, timeout=120)
            await _settled(settings.store.path, sent)
            ready = await _ready(bridge.http_port)
    assert_exactly_once_in_order(fake, sent)
    assert ready


async def _settled(db: Path, count: int) -> None:
    async with asyncio.timeout(60):
        while True:
            with sqlite3.connect(db) as conn:
                states = dict(conn.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state"))
            if states == {"delivered": count}:
                return
            await asyncio.sleep(0.1)


async def _ready(port: int | None) -> bool:
    with contextlib.suppress(aiohttp.ClientError):
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            return response.status == 200
    return False
