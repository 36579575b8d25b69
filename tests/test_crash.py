"""SIGKILL the real bridge process again and again while events stream in: every event still
reaches Go2Clock exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import API_KEY, canonical, publish, wait_until, write_config

TOPIC = "clockin/door/events"
EVENTS = 1500
KILLS = 5
CONCURRENCY = 4


async def _start_bridge(config: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--config", str(config),
            stdout=out, stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


async def _stream(port: int) -> None:
    """Publish steadily, in small bursts, like terminals at a shift change."""
    for start in range(0, EVENTS, 50):
        await publish(port, [(TOPIC, canonical(n)) for n in range(start, start + 50)])
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_sigkill_while_streaming_loses_and_doubles_nothing(
    broker: Mosquitto, tmp_path: Path
):
    rng = random.Random(20261129)
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        config = write_config(
            tmp_path, broker_port=broker.port, go2clock_url=url,
            extra={"sinks": {"go2clock": {"concurrency": CONCURRENCY}}},
        )
        log = tmp_path / "bridge.log"
        process = await _start_bridge(config, log)
        # The broker keeps messages for the bridge's session only once it has subscribed.
        await wait_until(_logged(log, "bridge.ready"), timeout=20, what="first bridge ready")
        streaming = asyncio.create_task(_stream(broker.port))
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.8, 2.0))
            process.send_signal(signal.SIGKILL)
            await process.wait()
            process = await _start_bridge(config, log)
        await streaming
        try:
            await fake.wait_for_records(EVENTS, timeout=90)
            await wait_until(_quiet(fake), timeout=10, what="no more requests")
        finally:
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), timeout=20)
    punches = fake.punches_by_key()
    assert len(punches) == EVENTS, f"{EVENTS - len(punches)} events never arrived"
    assert max(punches.values()) == 1
    # A kill can interrupt at most `concurrency` requests, each resent once and then
    # recognised by the vendor's duplicate check: layer 3 is used, and only that much.
    assert fake.duplicate_answers <= KILLS * CONCURRENCY
    assert code == 0, log.read_text()[-3000:]
    assert API_KEY not in log.read_text()


def _logged(log: Path, event: str):  # noqa: ANN202
    async def predicate() -> bool:
        return f'"event": "{event}"' in log.read_text(errors="replace")

    return predicate


def _quiet(fake: FakeGo2Clock):  # noqa: ANN202
    seen = {"count": -1}

    async def predicate() -> bool:
        count = len(fake.requests)
        quiet = count == seen["count"]
        seen["count"] = count
        await asyncio.sleep(0.3)
        return quiet

    return predicate
