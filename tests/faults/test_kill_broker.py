"""SIGKILL the broker (persistence on) and restart it, three times while the bridge consumes:
redelivered messages are recognised, the persistent session survives, every event reaches
Go2Clock exactly once and in per-person order."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.faults.common import HEAVY, assert_exactly_once_in_order, logged, start_bridge
from tests.harness import API_KEY, canonical, publish, wait_until, write_config

TOPIC = "clockin/ramp/events"
KILLS = 3
BURST = 2_000 if HEAVY else 300


async def _save_markers(port: int, round_: int) -> None:
    """mosquitto saves its store once more than `autosave_interval` (1) changes are pending, so
    the last message before a SIGKILL can be lost by the broker itself, before any client saw
    it. Two retained messages on a topic nobody reads count as changes and make it save the
    burst's tail: the test then measures the bridge, not that window of the broker."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for n in range(2):
            await client.publish(f"test/save-marker/{round_}/{n}", b"x", qos=1, retain=True)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """The suite's broker, saving its session store on every change: killed, it keeps its
    queue."""
    mosquitto = Mosquitto(tmp_path / "broker", save_every_change=True)
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


def _stored(db: Path, count: int):
    async def predicate() -> bool:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] >= count

    return predicate


@pytest.mark.slow
async def test_broker_killed_and_restarted_mid_stream(broker: Mosquitto, tmp_path: Path):
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        config = write_config(tmp_path, broker_port=broker.port, go2clock_url=url)
        log = tmp_path / "bridge.log"
        process = await start_bridge(config, log)
        try:
            await wait_until(logged(log, "bridge.ready"), timeout=20, what="bridge ready")
            for round_ in range(KILLS):
                first = round_ * BURST
                await publish(
                    broker.port, [(TOPIC, canonical(n)) for n in range(first, first + BURST)]
                )
                await _save_markers(broker.port, round_)
                # Kill the broker while the bridge is still storing and acknowledging.
                await wait_until(
                    _stored(tmp_path / "bridge.db", first + BURST // 2),
                    timeout=20,
                    what="half the burst stored",
                )
                await asyncio.to_thread(broker.restart, kill=True)
                await wait_until(
                    logged(log, "mqtt.connected", round_ + 2),
                    timeout=30,
                    what="the bridge back on the restarted broker",
                )
            last = KILLS * BURST
            await publish(broker.port, [(TOPIC, canonical(n)) for n in range(last, last + BURST)])
            total = last + BURST
            await fake.wait_for_records(total, timeout=120)
            await asyncio.sleep(0.5)
        finally:
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), timeout=20)
    assert_exactly_once_in_order(fake, total)
    assert code == 0
