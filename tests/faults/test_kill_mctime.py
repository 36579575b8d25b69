"""SIGKILL the real bridge while each kind of McTime action (start, break on, break off, stop)
is at the vendor: McTime applies it, the bridge never sees the answer. After the restart the
bridge reads GET /clock, in either of its plausible shapes, and every person still ends with
exactly one closed entry holding one closed break, no clock left running, and nothing dead."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.fakes.mctime import FakeMcTime, running_fake_mctime
from tests.faults.common import logged, start_bridge
from tests.harness import API_KEY, SHIPPED_COMMIT_WAIT, publish, wait_until, write_config

BERLIN = ZoneInfo("Europe/Berlin")
TOPIC = "clockin/main-door/events"
MC_KEY = "mc-kill-key-5e1d"
PEOPLE = {f"0D{n:02X}": f"mc-{n}" for n in range(3)}
# (punch, McTime action, the clock every person has once it is applied)
SHIFT = [
    ("in", 8, 0, "start", "running"),
    ("break_start", 12, 0, "break", "on_break"),
    ("break_end", 12, 30, "break", "running"),
    ("out", 16, 30, "stop", "off"),
]


def _swipe(badge: str, step: int) -> tuple[str, bytes]:
    action, hour, minute = SHIFT[step][:3]
    when = datetime(2026, 11, 24, hour, minute, tzinfo=BERLIN)
    body = {"id": f"{badge}-{step}", "badge": badge, "action": action, "time": when.isoformat()}
    return TOPIC, json.dumps(body).encode()


def _states(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state"))


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["item", "list"])
async def test_sigkill_during_each_mctime_action(
    broker: Mosquitto, tmp_path: Path, shape: str
) -> None:
    fake = FakeMcTime(api_key=MC_KEY)
    fake.clock_shape = shape
    rows = ["badge,userid,name,mctime_user_id"]
    rows += [f"{b},{n},Person {n},{m}" for n, (b, m) in enumerate(PEOPLE.items())]
    (tmp_path / "directory.csv").write_text("\n".join(rows) + "\n")
    async with (
        running_fake_go2clock(FakeGo2Clock(api_key=API_KEY)) as g_url,
        running_fake_mctime(fake) as m_url,
    ):
        config = write_config(
            tmp_path,
            broker_port=broker.port,
            go2clock_url=g_url,
            extra={
                "store": {"commit_wait_seconds": SHIPPED_COMMIT_WAIT},
                "sinks": {
                    "go2clock": {"enabled": False},
                    "mctime": {"enabled": True, "base_url": m_url, "api_key": MC_KEY},
                },
            },
        )
        log = tmp_path / "bridge.log"
        process = await start_bridge(config, log)
        await wait_until(logged(log, "bridge.ready"), timeout=20, what="bridge ready")
        try:
            for step, (_, _, _, action, clock) in enumerate(SHIFT):
                fake.delay_seconds = 0.5  # the action stays at McTime while the bridge dies
                sent = len(fake.posts(action))

                def arrived(action: str = action, sent: int = sent) -> bool:
                    return len(fake.posts(action)) > sent

                def reached(clock: str = clock) -> bool:
                    return all(fake.clock_state(m) == clock for m in PEOPLE.values())

                await publish(broker.port, [_swipe(badge, step) for badge in PEOPLE])
                await fake.wait_until(arrived, 20)
                process.send_signal(signal.SIGKILL)
                await process.wait()
                fake.delay_seconds = 0
                # McTime finishes what reached it; the bridge never reads the answer
                await fake.wait_until(lambda: all(r["answer"] for r in fake.requests), 5)
                process = await start_bridge(config, log)
                await fake.wait_until(reached, 20)
            db = config.parent / "bridge.db"
            await wait_until(
                lambda: asyncio.to_thread(lambda: set(_states(db)) == {"delivered"}),
                timeout=20,
                what="every delivery delivered",
            )
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout=20)
    assert fake.clocks == {}, "no clock left running"
    assert sorted(e["userId"] for e in fake.entries) == sorted(PEOPLE.values())
    for entry in fake.entries:
        [closed] = entry["breaks"]
        assert (closed["from"].hour, closed["to"].hour, closed["to"].minute) == (12, 12, 30)
    # one POST per person and action: each killed one was checked by GET /clock, not resent
    assert len(fake.posts("break")) == 2 * len(PEOPLE), "no extra toggle"
    assert len(fake.posts("start")) == len(fake.posts("stop")) == len(PEOPLE)
    assert fake.gets(), "the restarted bridge read the running clocks"
    assert MC_KEY not in log.read_text()
