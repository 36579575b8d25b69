"""Power cuts (tests/faults/powercut.py: the bridge killed and its database put back as it was at
its last flush) and what they may cost now that claims and settles are not flushed on their own
(bridge/store/durability.py): one flush per swipe; after a cut, nothing lost, Go2Clock
duplicates within the bound, McTime's clock never toggled twice."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.fakes.mctime import FakeMcTime, running_fake_mctime
from tests.fakes.timetrack import FakeTimeTrack, running_fake_timetrack
from tests.faults.common import logged, start_bridge
from tests.faults.powercut import build_shim, flushes, lose_unflushed_writes, shim_env
from tests.harness import (
    API_KEY,
    SHIPPED_COMMIT_WAIT,
    canonical,
    publish,
    wait_until,
    write_config,
)

BERLIN = ZoneInfo("Europe/Berlin")
TOPIC = "clockin/main-door/events"
MC_KEY = "mc-powercut-key-91c2"
TT_KEY, TT_SECRET = "tt-powercut-key-44d0", "tt-powercut-secret-0b7e"
PEOPLE = {f"0E{n:02X}": (str(n), f"mc-{n}") for n in range(3)}
# (punch, hour, minute, McTime action, the clock every person has once it is applied)
SHIFT = [
    ("in", 8, 0, "start", "running"),
    ("break_start", 12, 0, "break", "on_break"),
    ("break_end", 12, 30, "break", "running"),
    ("out", 16, 30, "stop", "off"),
]
DAYS = 5  # 5 days x 4 punches: 20 power cuts
SWIPES = 12


def _states(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state"))


def _applied(fake: FakeMcTime, action: str) -> list[dict[str, object]]:
    """POSTs McTime applied (one refused by its rate limit after a restart is not)."""
    return [r for r in fake.posts(action) if isinstance(r["answer"], int) and r["answer"] < 300]


def _swipe(badge: str, day: int, step: int) -> tuple[str, bytes]:
    action, hour, minute = SHIFT[step][:3]
    when = datetime(2026, 11, 2 + day, hour, minute, tzinfo=BERLIN)
    body = {"id": f"{badge}-{day}-{step}", "badge": badge, "action": action}
    return TOPIC, json.dumps({**body, "time": when.isoformat()}).encode()


@pytest.mark.slow
async def test_one_flush_per_swipe(broker: Mosquitto, tmp_path: Path) -> None:
    """Swipes one at a time: the ingest commit is flushed (PUBACK waits for it); the claim and
    the settle of its Go2Clock delivery are not, the next swipe's flush covers them."""
    shim = build_shim(tmp_path)
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        # The shipped settle window: a swipe's claim comes 2 s after its ingest's flush.
        config = write_config(
            tmp_path,
            broker_port=broker.port,
            go2clock_url=url,
            extra={
                "dispatch": {"settle_seconds": 2},
                "store": {"commit_wait_seconds": SHIPPED_COMMIT_WAIT},
            },
        )
        db, flush_log, log = config.parent / "bridge.db", tmp_path / "flushes.log", tmp_path / "log"
        process = await start_bridge(config, log, env=shim_env(shim, db, flush_log))
        try:
            await wait_until(logged(log, "bridge.ready"), timeout=20, what="bridge ready")
            await asyncio.sleep(1)  # start-up writes done
            before = flushes(flush_log)
            for n in range(SWIPES):
                await publish(broker.port, [(TOPIC, canonical(n))])
                await fake.wait_for_records(n + 1, timeout=10)
                await wait_until(
                    lambda: asyncio.to_thread(lambda: set(_states(db)) == {"delivered"}),
                    timeout=10,
                    what="settled",
                )
            used = flushes(flush_log) - before
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout=20)
    # each swipe: ingest, claim, settle; only the ingest flushes (3 each before)
    assert used <= SWIPES * 1.2, f"{used} flushes for {SWIPES} swipes"


@pytest.mark.slow
async def test_power_cut_between_send_and_settle(broker: Mosquitto, tmp_path: Path) -> None:
    """20 power cuts, each at a random moment from McTime receiving the punches of a step to
    0.3 s later (sent, answered, maybe settled, settle maybe flushed). Every punch still reaches
    the three vendors; McTime gets exactly one POST per person and action (a lost settle is
    found applied by GET /clock, because the claim before the send was flushed); TimeTrack holds
    one attendance per person and day, none created twice; Go2Clock answers at most one
    duplicate per person per cut (each a settle lost since the last flush)."""
    rng = random.Random(20261130)
    shim = build_shim(tmp_path)
    mctime = FakeMcTime(api_key=MC_KEY)
    go2clock = FakeGo2Clock(api_key=API_KEY)
    timetrack = FakeTimeTrack(api_key=TT_KEY, api_secret=TT_SECRET)
    rows = ["badge,userid,name,mctime_user_id,timetrack_username"]
    rows += [f"{b},{g},Person {g},{m},tt-{g}" for b, (g, m) in PEOPLE.items()]
    (tmp_path / "directory.csv").write_text("\n".join(rows) + "\n")
    async with (
        running_fake_go2clock(go2clock) as g_url,
        running_fake_mctime(mctime) as m_url,
        running_fake_timetrack(timetrack) as t_url,
    ):
        config = write_config(
            tmp_path,
            broker_port=broker.port,
            go2clock_url=g_url,
            extra={
                "store": {"commit_wait_seconds": SHIPPED_COMMIT_WAIT},
                "sinks": {
                    "mctime": {"enabled": True, "base_url": m_url, "api_key": MC_KEY},
                    "timetrack": {
                        "enabled": True,
                        "base_url": t_url,
                        "api_key": TT_KEY,
                        "api_secret": TT_SECRET,
                    },
                },
            },
        )
        db, flush_log, log = config.parent / "bridge.db", tmp_path / "flushes.log", tmp_path / "log"
        env = shim_env(shim, db, flush_log)
        process = await start_bridge(config, log, env=env)
        await wait_until(logged(log, "bridge.ready"), timeout=20, what="bridge ready")
        try:
            for day in range(DAYS):
                for step, (_, _, _, action, clock) in enumerate(SHIFT):
                    sent = len(mctime.posts(action))

                    def arrived(action: str = action, sent: int = sent) -> bool:
                        return len(mctime.posts(action)) >= sent + len(PEOPLE)

                    def reached(clock: str = clock) -> bool:
                        return all(mctime.clock_state(m) == clock for _, m in PEOPLE.values())

                    await publish(broker.port, [_swipe(b, day, step) for b in PEOPLE])
                    await mctime.wait_until(arrived, 20)
                    await asyncio.sleep(rng.uniform(0.0, 0.3))
                    process.send_signal(signal.SIGKILL)
                    await process.wait()
                    lose_unflushed_writes(db)
                    process = await start_bridge(config, log, env=env)
                    await mctime.wait_until(reached, 20)
            await wait_until(
                lambda: asyncio.to_thread(lambda: set(_states(db)) == {"delivered"}),
                timeout=30,
                what="every delivery delivered",
            )
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout=20)
    cuts, people = DAYS * len(SHIFT), len(PEOPLE)
    assert mctime.clocks == {}, "no clock left running"
    assert len(mctime.entries) == DAYS * people
    for entry in mctime.entries:
        [closed] = entry["breaks"]
        assert (closed["from"].hour, closed["to"].hour, closed["to"].minute) == (12, 12, 30)
    assert len(_applied(mctime, "break")) == 2 * DAYS * people, "no extra toggle"
    assert len(_applied(mctime, "start")) == len(_applied(mctime, "stop")) == DAYS * people
    assert mctime.gets(), "settles were lost, and the resends looked first"
    assert len(timetrack.attendances) == len(timetrack.live()) == DAYS * people, "none twice"
    assert all(attendance.get("to") for attendance in timetrack.live()), "every shift closed"
    punches = go2clock.punches_by_key()
    assert len(punches) == cuts * people, "every punch reached Go2Clock"
    assert max(punches.values()) == 1
    assert go2clock.duplicate_answers <= cuts * people
    assert API_KEY not in log.read_text()
    assert MC_KEY not in log.read_text()
    assert TT_SECRET not in log.read_text()
