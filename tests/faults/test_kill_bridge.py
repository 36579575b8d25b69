"""SIGKILL the real bridge process at 20 random points while events stream in: every event still
reaches Go2Clock exactly once, in per-person order, and nothing is left pending. The same with
20 power cuts (tests/faults/powercut.py): what was not flushed is lost too, yet no acknowledged
event, and the resends stay within what the unflushed settles can be."""

from __future__ import annotations

import asyncio
import bisect
import random
import signal
import sqlite3
from pathlib import Path

import pytest

from bridge.dispatch.pump import CLAIM_AHEAD
from bridge.store.durability import LAZY_SECONDS
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.faults.common import HEAVY, assert_exactly_once_in_order, logged, start_bridge
from tests.faults.powercut import build_shim, lose_unflushed_writes, shim_env
from tests.harness import (
    API_KEY,
    SHIPPED_COMMIT_WAIT,
    canonical,
    publish,
    wait_until,
    write_config,
)

TOPIC = "clockin/door/events"
EVENTS = 20_000 if HEAVY else 3_000
KILLS = 20
CONCURRENCY = 4
BURST = 50


@pytest.mark.slow
@pytest.mark.parametrize("cut", ["sigkill", "power"])
async def test_sigkill_at_random_points_loses_and_doubles_nothing(
    broker: Mosquitto, tmp_path: Path, cut: str
):
    rng = random.Random(20261129)
    db = tmp_path / "bridge.db"
    env = shim_env(build_shim(tmp_path), db, tmp_path / "flushes.log") if cut == "power" else {}
    kill_points = sorted(rng.sample(range(BURST, EVENTS), KILLS))
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        config = write_config(
            tmp_path,
            broker_port=broker.port,
            go2clock_url=url,
            extra={
                "sinks": {"go2clock": {"concurrency": CONCURRENCY}},
                "store": {"commit_wait_seconds": SHIPPED_COMMIT_WAIT},
            },
        )
        log = tmp_path / "bridge.log"
        process = await start_bridge(config, log, env=env)
        # The broker keeps messages for the bridge's session only once it has subscribed.
        await wait_until(logged(log, "bridge.ready"), timeout=20, what="first bridge ready")
        try:
            for start in range(0, EVENTS, BURST):
                await publish(
                    broker.port, [(TOPIC, canonical(n)) for n in range(start, start + BURST)]
                )
                while kill_points and kill_points[0] <= start:
                    kill_points.pop(0)
                    # Anywhere: storing, acknowledging, sending, settling, or still starting up.
                    await asyncio.sleep(rng.uniform(0.0, 0.3))
                    process.send_signal(signal.SIGKILL)
                    await process.wait()
                    if cut == "power":
                        lose_unflushed_writes(db)
                    process = await start_bridge(config, log, env=env)
                await asyncio.sleep(0.02)
            await fake.wait_for_records(EVENTS, timeout=180 if HEAVY else 90)
            await wait_until(
                _nothing_pending(config.parent / "bridge.db"), timeout=20, what="an empty queue"
            )
        finally:
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), timeout=20)
    assert_exactly_once_in_order(fake, EVENTS)
    # A kill can catch a delivery sent but not yet settled: at the vendor (at most
    # `concurrency`) or answered with its settle still waiting for the next commit (the slot
    # passes on first). The dispatcher holds at most concurrency + CLAIM_AHEAD deliveries, so
    # that is the most a kill can make it send again, each recognised by the vendor's
    # duplicate check: layer 3 is used, and only that much. (20 kills here make ~80-100.)
    # A power cut also loses the settles committed since the last flush: at most LAZY_SECONDS
    # of them (bridge/store/durability.py), each resent once.
    lost_settles = _most_in_any_window([r["received_at"] for r in fake.requests], LAZY_SECONDS)
    per_cut = CONCURRENCY + CLAIM_AHEAD + (lost_settles if cut == "power" else 0)
    assert fake.duplicate_answers <= KILLS * per_cut
    assert code == 0, log.read_text()[-3000:]
    assert API_KEY not in log.read_text()


def _most_in_any_window(times: list[float], window: float) -> int:
    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, t + window) - i for i, t in enumerate(ordered)), default=0
    )


def _nothing_pending(db: Path):
    async def predicate() -> bool:
        with sqlite3.connect(db) as conn:
            states = dict(conn.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state"))
        return set(states) == {"delivered"}

    return predicate
