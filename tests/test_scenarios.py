"""A whole shift through all three sinks at once: Go2Clock punches, McTime clock actions and a
TimeTrack attendance, also with every message sent twice, with the bridge SIGKILLed between the
steps, and with a burst that would trip McTime's rate limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.fakes.mctime import FakeMcTime, running_fake_mctime
from tests.fakes.timetrack import FakeTimeTrack, running_fake_timetrack
from tests.faults.common import logged, start_bridge
from tests.harness import API_KEY, publish, running_bridge, settings_from, wait_until, write_config

BERLIN = ZoneInfo("Europe/Berlin")
TOPIC = "clockin/main-door/events"
PEOPLE = {"04AA": ("1", "mc-ana", "ana"), "04BB": ("2", "mc-ben", "ben")}
SHIFT = [("in", 8, 0), ("break_start", 12, 0), ("break_end", 12, 30), ("out", 16, 30)]


@dataclass
class Vendors:
    go2clock: FakeGo2Clock
    mctime: FakeMcTime
    timetrack: FakeTimeTrack
    config: Path


def _write_directory(path: Path, people: dict[str, tuple[str, str, str]]) -> None:
    rows = ["badge,userid,name,mctime_user_id,timetrack_username"]
    rows += [f"{b},{g},Person {g},{m},{t}" for b, (g, m, t) in people.items()]
    path.write_text("\n".join(rows) + "\n")


@contextlib.asynccontextmanager
async def vendors(
    tmp_path: Path, broker: Mosquitto, people: dict[str, tuple[str, str, str]] = PEOPLE
) -> AsyncIterator[Vendors]:
    fakes = Vendors(
        FakeGo2Clock(api_key=API_KEY),
        FakeMcTime("mc-key"),
        FakeTimeTrack("tt-key", "tt-secret"),
        tmp_path / "config.yaml",
    )
    _write_directory(tmp_path / "directory.csv", people)
    async with (
        running_fake_go2clock(fakes.go2clock) as g_url,
        running_fake_mctime(fakes.mctime) as m_url,
        running_fake_timetrack(fakes.timetrack) as t_url,
    ):
        fakes.config = write_config(
            tmp_path,
            broker_port=broker.port,
            go2clock_url=g_url,
            extra={
                "site": {"timezone": "Europe/Berlin"},
                "sinks": {
                    "mctime": {"enabled": True, "base_url": m_url, "api_key": "mc-key"},
                    "timetrack": {
                        "enabled": True,
                        "base_url": t_url,
                        "api_key": "tt-key",
                        "api_secret": "tt-secret",
                    },
                },
            },
        )
        yield fakes


def _swipe(badge: str, step: int) -> bytes:
    action, hour, minute = SHIFT[step]
    when = datetime(2026, 11, 24, hour, minute, tzinfo=BERLIN)
    return json.dumps(
        {"id": f"{badge}-{step}", "badge": badge, "action": action, "time": when.isoformat()}
    ).encode()


def _shift_messages(badges: list[str]) -> list[list[tuple[str, bytes]]]:
    return [[(TOPIC, _swipe(badge, step)) for badge in badges] for step in range(len(SHIFT))]


async def _all_booked(fakes: Vendors, people: int) -> bool:
    return (
        len(fakes.go2clock.records) >= 4 * people
        and len(fakes.mctime.entries) >= people
        and len(fakes.timetrack.live()) >= people
    )


def _assert_shift_booked_once(fakes: Vendors) -> None:
    # Go2Clock: four punches per person, in order, each once.
    punches = fakes.go2clock.punches_by_key()
    assert len(punches) == 8
    assert max(punches.values()) == 1
    for userid in ("1", "2"):
        mine = [r for r in fakes.go2clock.records if r["userid"] == userid]
        assert [r["checktype"] for r in mine] == ["0", "2", "3", "1"]
        assert mine[0]["checktime"] == "2026-11-24T08:00:00"
    # McTime: one time entry per person with one break, nobody left clocked in.
    assert sorted(e["userId"] for e in fakes.mctime.entries) == ["mc-ana", "mc-ben"]
    for entry in fakes.mctime.entries:
        assert entry["from"].isoformat() == "2026-11-24T08:00:00+01:00"
        assert entry["to"].isoformat() == "2026-11-24T16:30:00+01:00"
        assert [(b["from"].hour, b["to"].minute) for b in entry["breaks"]] == [(12, 30)]
    assert fakes.mctime.clocks == {}
    # TimeTrack: one attendance per person, in UTC, with the 30-minute break.
    live = fakes.timetrack.live()
    assert sorted(a["user"] for a in live) == ["ana", "ben"]
    for attendance in live:
        assert attendance["from"] == "2026-11-24T07:00:00.000Z"
        assert attendance["to"] == "2026-11-24T15:30:00.000Z"
        assert attendance["breakMinutes"] == 30


async def test_a_full_shift_reaches_all_three_sinks(broker: Mosquitto, tmp_path: Path):
    async with vendors(tmp_path, broker) as fakes, running_bridge(settings_from(fakes.config)):
        for step in _shift_messages(list(PEOPLE)):
            await publish(broker.port, step)
        await wait_until(lambda: _all_booked(fakes, 2), timeout=20, what="shift booked")
        await asyncio.sleep(0.3)  # anything extra would arrive now
    _assert_shift_booked_once(fakes)


async def test_the_same_shift_with_every_message_sent_twice(broker: Mosquitto, tmp_path: Path):
    async with vendors(tmp_path, broker) as fakes, running_bridge(settings_from(fakes.config)):
        for step in _shift_messages(list(PEOPLE)):
            await publish(broker.port, [message for message in step for _ in range(2)])
        await wait_until(lambda: _all_booked(fakes, 2), timeout=20, what="shift booked")
        await asyncio.sleep(0.3)
    _assert_shift_booked_once(fakes)


@pytest.mark.slow
async def test_the_shift_with_the_bridge_killed_between_steps(broker: Mosquitto, tmp_path: Path):
    rng = random.Random(7)
    async with vendors(tmp_path, broker) as fakes:
        log = tmp_path / "bridge.log"
        process = await start_bridge(fakes.config, log)
        await wait_until(logged(log, "bridge.ready"), timeout=20, what="bridge ready")
        try:
            for step in _shift_messages(list(PEOPLE)):
                await publish(broker.port, step)
                await asyncio.sleep(rng.uniform(0.0, 0.4))  # sometimes mid-delivery
                process.send_signal(signal.SIGKILL)
                await process.wait()
                process = await start_bridge(fakes.config, log)
            await wait_until(lambda: _all_booked(fakes, 2), timeout=30, what="shift booked")
            await asyncio.sleep(0.5)
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout=20)
    _assert_shift_booked_once(fakes)


async def test_a_burst_never_exceeds_mctimes_rate_limit(broker: Mosquitto, tmp_path: Path):
    people = {f"0C{n:02X}": (str(100 + n), f"mc-{n}", f"tt-{n}") for n in range(60)}
    async with (
        vendors(tmp_path, broker, people) as fakes,
        running_bridge(settings_from(fakes.config)),
    ):
        when = datetime(2026, 11, 24, 7, 58, tzinfo=BERLIN).isoformat()
        burst = [
            (TOPIC, json.dumps({"id": b, "badge": b, "action": "in", "time": when}).encode())
            for b in people
        ]
        await publish(broker.port, burst)
        await wait_until(lambda: _clocks(fakes.mctime, 60), timeout=30, what="60 clocks")
    assert fakes.mctime.max_requests_in_any_second() <= 10
    assert not [r for r in fakes.mctime.requests if r.get("answer") == 429]
    assert len(fakes.go2clock.records) == 60


async def _clocks(fake: FakeMcTime, count: int) -> bool:
    return len(fake.clocks) >= count
