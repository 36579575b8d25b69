"""Swipes without an action through the real broker to the fake Go2Clock: direction comes from
the shift, not from the calendar day (issue 14, item 1). Payroll's answer for each shift is
in/out (with breaks where a schedule says so)."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from bridge.cli import main
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import API_KEY, publish, running_bridge, settings_from, wait_until, write_config
from tests.test_scenarios import vendors

BERLIN = ZoneInfo("Europe/Berlin")
TOPIC = "clockin/hall/events"
CHECKTYPE = {"0": "in", "1": "out", "2": "break_start", "3": "break_end"}
# The night schedule of the tests: in from 21:00, out from 05:00 to 08:00.
NIGHT = {
    "name": "night",
    "start": "22:00",
    "end": "06:00",
    "margin_before": 60,
    "margin_after": 120,
}


def bare(badge: str, when: datetime) -> tuple[str, bytes]:
    """A swipe without an action, as a Tasmota reader or a button-less kiosk sends it."""
    payload = {"id": f"{badge}-{when.isoformat()}", "badge": badge, "time": when.isoformat()}
    return TOPIC, json.dumps(payload).encode()


def local(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=BERLIN)


async def booked(
    tmp_path: Path,
    broker: Mosquitto,
    swipes: dict[str, list[datetime]],
    *,
    inference: dict[str, Any] | None = None,
) -> dict[str, list[tuple[str, str]]]:
    """Publish every badge's bare swipes in one go, then what Go2Clock booked per user:
    (local checktime, direction) in time order."""
    fake = FakeGo2Clock(api_key=API_KEY)
    extra: dict[str, Any] = {"retry": {"max_age_days": 400}}
    if inference is not None:
        extra["inference"] = inference
    async with running_fake_go2clock(fake) as url:
        config = write_config(tmp_path, broker_port=broker.port, go2clock_url=url, extra=extra)
        async with running_bridge(settings_from(config)):
            messages = [bare(badge, when) for badge, times in swipes.items() for when in times]
            await publish(broker.port, messages)
            total = len(messages)

            async def all_booked() -> bool:
                return len(fake.records) >= total

            await wait_until(all_booked, timeout=20, what=f"{total} punches")
            await asyncio.sleep(0.2)  # anything extra would arrive now
    assert len(fake.records) == total
    result: dict[str, list[tuple[str, str]]] = {}
    for record in sorted(fake.records, key=lambda r: r["checktime"]):
        result.setdefault(record["userid"], []).append(
            (record["checktime"], CHECKTYPE[record["checktype"]])
        )
    return result


def directions(booked_for: list[tuple[str, str]]) -> list[str]:
    return [direction for _, direction in booked_for]


async def test_two_night_shifts_and_a_day_shift(broker: Mosquitto, tmp_path: Path) -> None:
    """22:00 and 06:00 on two nights, then a day shift: in/out per shift (it was in, in, out,
    in for the nights, toggled from the same local day)."""
    nights = [local(11, 23, 22), local(11, 24, 6), local(11, 24, 22), local(11, 25, 6)]
    day = [local(11, 26, 8), local(11, 26, 12), local(11, 26, 12, 30), local(11, 26, 17)]
    result = await booked(tmp_path, broker, {"B0001": nights + day})
    assert directions(result["1001"]) == ["in", "out"] * 4
    assert result["1001"][0] == ("2026-11-23T22:00:00", "in")


async def test_a_night_shift_across_the_october_change(broker: Mosquitto, tmp_path: Path) -> None:
    """22:00 CEST to 06:00 CET (2026-10-25, clocks back at 03:00): 9 hours, one shift."""
    swipes = [local(10, 24, 22), local(10, 25, 6), local(10, 25, 22), local(10, 26, 6)]
    result = await booked(tmp_path, broker, {"B0002": swipes})
    assert result["1002"] == [
        ("2026-10-24T22:00:00", "in"),
        ("2026-10-25T06:00:00", "out"),
        ("2026-10-25T22:00:00", "in"),
        ("2026-10-26T06:00:00", "out"),
    ]


async def test_a_missed_out_starts_the_next_day_with_in(broker: Mosquitto, tmp_path: Path) -> None:
    """The night of the 24th was never clocked out: the next night still starts with in and
    its pair is right (by local day it was in, in, out, in, in)."""
    swipes = [local(11, 23, 22), local(11, 24, 6), local(11, 24, 22)]
    swipes += [local(11, 25, 22), local(11, 26, 6)]  # no swipe at 06:00 on the 25th
    result = await booked(tmp_path, broker, {"B0003": swipes})
    assert directions(result["1003"]) == ["in", "out", "in", "in", "out"]


async def test_a_scheduled_night_window_crossing_midnight(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """With a night schedule: in, a break, out in the closing part, on two nights; a day
    swipe outside the window follows max_shift_hours."""
    nights = [local(11, 23, 21, 50), local(11, 24, 2), local(11, 24, 2, 30), local(11, 24, 5, 40)]
    nights += [local(11, 24, 21, 55), local(11, 25, 1), local(11, 25, 1, 20)]
    nights.append(local(11, 25, 6, 5))
    result = await booked(tmp_path, broker, {"B0004": nights}, inference={"shifts": [NIGHT]})
    assert directions(result["1004"]) == ["in", "break_start", "break_end", "out"] * 2


async def test_a_schedule_by_directory_column(broker: Mosquitto, tmp_path: Path) -> None:
    """The night window applies to people whose directory `shift` is `night` only: a night
    worker's break pair is breaks, a day worker swiping at the same hours toggles in/out."""
    (tmp_path / "directory.csv").write_text(
        "badge,userid,name,shift\nB0007,1007,Night Worker,night\nB0008,1008,Day Worker,day\n"
    )
    night = [local(11, 23, 21, 50), local(11, 24, 2), local(11, 24, 2, 30), local(11, 24, 5, 40)]
    inference = {"group_column": "shift", "shifts": [{**NIGHT, "groups": ["night"]}]}
    result = await booked(tmp_path, broker, {"B0007": night, "B0008": night}, inference=inference)
    assert directions(result["1007"]) == ["in", "break_start", "break_end", "out"]
    assert directions(result["1008"]) == ["in", "out", "in", "out"]


UNMAPPED = ("unmapped", "list", "--config")


def _rows(page: str, table_id: str) -> list[list[str]]:
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.DOTALL)
    assert table, f"table {table_id} missing"
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.DOTALL)
    return [re.findall(r"<td>(.*?)</td>", row, re.DOTALL) for row in rows[1:]]


async def test_inferred_directions_are_shown(
    broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The status page and `unmapped list` say which directions the bridge chose."""
    fake = FakeGo2Clock(api_key=API_KEY)
    pressed = json.dumps(
        {"id": "pressed", "badge": "B0006", "action": "in", "time": local(11, 23, 8).isoformat()}
    )
    messages = [bare("B0005", local(11, 23, 8)), (TOPIC, pressed.encode())]
    messages.append(bare("ZZ01", local(11, 23, 8)))  # in no directory: unmapped
    async with running_fake_go2clock(fake) as url:
        config = write_config(tmp_path, broker_port=broker.port, go2clock_url=url)
        async with running_bridge(settings_from(config)) as bridge:
            await publish(broker.port, messages)
            await fake.wait_for_records(2, timeout=10)
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{bridge.http_port}/") as reply,
            ):
                page = await reply.text()
    events = {row[0]: row for row in _rows(page, "events")}
    assert len(events) == 3
    assert events["hall/pressed"][3:5] == ["in", ""]
    inferred = [row for key, row in events.items() if key != "hall/pressed"]
    assert [row[3:5] for row in inferred] == [["in", "inferred"]] * 2
    assert '<span id="inferred">2</span>' in page  # the count, from the store's counters

    capsys.readouterr()
    assert await asyncio.to_thread(main, ["status", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inferred"] == 2

    capsys.readouterr()  # the bridge's log so far
    # the command runs its own event loop (asyncio.run): in a thread, as from a shell
    assert await asyncio.to_thread(main, [*UNMAPPED, str(config), "--json"]) == 0
    [unmapped] = json.loads(capsys.readouterr().out)
    assert (unmapped["badge"], unmapped["events"], unmapped["inferred"]) == ("ZZ01", 1, 1)
    assert await asyncio.to_thread(main, [*UNMAPPED, str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:3] == ["badge", "events", "inferred"]


def utc_text(when: datetime) -> str:
    """A time as TimeTrack stores it."""
    return f"{when.astimezone(UTC):%Y-%m-%dT%H:%M:%S}.000Z"


async def test_night_and_day_shifts_at_all_three_vendors(
    broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same two nights and a day without actions, at Go2Clock, McTime and TimeTrack: a
    closed McTime entry and a TimeTrack attendance per shift, no clock left running, nothing
    held (by calendar day McTime booked one 24-hour entry and left a clock running, and
    TimeTrack held both nights as over the maximum shift)."""
    nights = [local(11, 23, 22), local(11, 24, 6), local(11, 24, 22), local(11, 25, 6)]
    day = [local(11, 26, 8), local(11, 26, 12), local(11, 26, 12, 30), local(11, 26, 17)]
    shifts = [(nights[0], nights[1]), (nights[2], nights[3]), (day[0], day[1]), (day[2], day[3])]
    badges = {"04AA": ("1", "mc-ana", "ana"), "04BB": ("2", "mc-ben", "ben")}
    async with vendors(tmp_path, broker) as fakes, running_bridge(settings_from(fakes.config)):
        await publish(broker.port, [bare(badge, when) for badge in badges for when in nights + day])

        async def every_shift_closed() -> bool:
            attendances = fakes.timetrack.live()
            return (
                len(fakes.go2clock.records) >= 8 * len(badges)
                and len(fakes.mctime.entries) >= 4 * len(badges)
                and len(attendances) >= 4 * len(badges)
                and all(a.get("to") for a in attendances)
            )

        await wait_until(every_shift_closed, timeout=30, what="every shift closed at every sink")
        await asyncio.sleep(0.5)  # anything extra would arrive now
    capsys.readouterr()  # the bridge's log so far
    held = ["held", "list", "--config", str(fakes.config), "--json"]
    assert await asyncio.to_thread(main, held) == 0
    assert json.loads(capsys.readouterr().out) == []
    for userid, mctime_user, timetrack_user in badges.values():
        go2clock = sorted(
            (r for r in fakes.go2clock.records if r["userid"] == userid),
            key=lambda r: r["checktime"],
        )
        assert [CHECKTYPE[r["checktype"]] for r in go2clock] == ["in", "out"] * 4
        entries = [e for e in fakes.mctime.entries if e["userId"] == mctime_user]
        assert sorted((e["from"], e["to"]) for e in entries) == shifts
        attendances = [a for a in fakes.timetrack.live() if a["user"] == timetrack_user]
        assert sorted((a["from"], a["to"]) for a in attendances) == [
            (utc_text(start), utc_text(end)) for start, end in shifts
        ]
    assert fakes.mctime.clocks == {}
