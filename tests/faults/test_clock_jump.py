"""The gateway's clock is set back an hour while punches are queued for retry: nothing stalls
for that hour, nothing is reordered, nothing is sent twice.

The bridge runs under libfaketime (Debian's faketime package), whose offset file the test
rewrites mid-run; the monotonic clock is left alone, as a real clock change leaves it."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.faults.common import assert_exactly_once_in_order, logged, start_bridge
from tests.harness import API_KEY, event_time, publish, wait_until, write_config

TOPIC = "clockin/gate/events"
LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), None)


def _swipes(first: int, count: int) -> list[tuple[str, bytes]]:
    """Several swipes per person (badges B0000..B0009), each a minute apart."""
    messages = []
    for n in range(first, first + count):
        when = event_time(0).replace(hour=6) + (event_time(n) - event_time(0)) * 9
        body = {
            "id": f"j{n}",
            "badge": f"B{n % 10:04d}",
            "action": "in" if n % 20 < 10 else "out",
            "time": when.isoformat(),
        }
        messages.append((TOPIC, json.dumps(body).encode()))
    return messages


@pytest.mark.skipif(LIBFAKETIME is None, reason="Debian's faketime package is not installed")
@pytest.mark.slow
async def test_clock_set_back_an_hour_neither_stalls_nor_reorders(
    broker: Mosquitto, tmp_path: Path
):
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_CACHE_DURATION": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    fake = FakeGo2Clock(api_key=API_KEY)
    fake.fail_5xx = 3  # the first answers fail: retries and probes scheduled on the old clock
    async with running_fake_go2clock(fake) as url:
        config = write_config(
            tmp_path,
            broker_port=broker.port,
            go2clock_url=url,
            extra={
                "retry": {"initial_seconds": 2, "max_seconds": 4},
            },
        )
        log = tmp_path / "bridge.log"
        process = await start_bridge(config, log, env=env)
        try:
            await wait_until(logged(log, "bridge.ready"), timeout=20, what="ready")
            await publish(broker.port, _swipes(0, 40))
            # Once the first request failed, every queued punch waits on the old clock's schedule.
            await wait_until(_answered(fake, 1), timeout=10, what="the first failure")
            offset.write_text("-1h\n")  # somebody sets the gateway's clock back an hour
            await asyncio.sleep(1.5)
            await publish(broker.port, _swipes(40, 40))
            await fake.wait_for_records(80, timeout=60)
            await asyncio.sleep(0.5)
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout=20)
    assert_exactly_once_in_order(fake, 80)


def _answered(fake: FakeGo2Clock, count: int):
    async def predicate() -> bool:
        return len(fake.requests) >= count

    return predicate
