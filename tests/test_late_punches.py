"""Late punches (issue 14, item 2): a terminal that was offline publishes its buffer after newer
punches of the same people were already delivered.

- Go2Clock stores punches, not state: late punches go as they come.
- McTime and TimeTrack keep state per person: a punch older than the person's last one applied
  there is held ("late: older than the last action sent at ..."), never applied out of order.
- dispatch.settle_seconds lets near-simultaneous arrivals be sorted by event time first.
- A late swipe without an action that would change a direction already inferred is held.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from bridge.delivery import Result
from bridge.events import Action, ClockEvent
from bridge.store import Incoming, Store
from tests.broker import Mosquitto
from tests.harness import publish, running_bridge, settings_from, wait_until
from tests.test_cli import child_env
from tests.test_scenarios import Vendors, vendors
from tests.test_store import query

BERLIN = ZoneInfo("Europe/Berlin")
MORNING = datetime(2026, 11, 23, 8, 0, tzinfo=BERLIN)


def _swipe(key: str, at: datetime, action: Action | None) -> ClockEvent:
    return ClockEvent(
        key=key,
        terminal="door-1",
        badge="B1",
        user=None,
        action=action,
        time=at.astimezone(UTC),
        time_given=True,
    )


def everyone(event: ClockEvent) -> dict[str, str | None]:
    """Every badge is a known person at both sinks of these tests."""
    return {"go2clock": f"g-{event.badge}", "mctime": f"m-{event.badge}"}


async def _ingest(store: Store, *events: ClockEvent) -> list[str | None]:
    stored = await store.ingest(
        [Incoming(event, "clockin/door-1/events") for event in events],
        resolve=everyone,
        received_at=datetime.now(UTC),
    )
    return [s.reason for s in stored]


# --- the store's rules ----------------------------------------------------------------------


async def test_a_new_punch_waits_the_settle_window_then_goes_in_event_order(
    tmp_path: Path,
) -> None:
    """The later punch arrived first; within the window the earlier one still goes first."""
    async with Store.open(
        tmp_path / "q.db", site_tz=BERLIN, window_seconds=60, settle_seconds=2
    ) as store:
        await _ingest(store, _swipe("out", MORNING + timedelta(hours=8), Action.OUT))
        await _ingest(store, _swipe("in", MORNING, Action.IN))
        now = time.time()
        assert await store.claim("go2clock", limit=10, now=now) == []  # still settling
        first = await store.claim("go2clock", limit=10, now=now + 2.5)
        assert [job.event_key for job in first] == ["in"]
        await store.settle(first[0], Result.delivered(), retry_at=0, now=now + 2.5)
        second = await store.claim("go2clock", limit=10, now=now + 2.5)
        assert [job.event_key for job in second] == ["out"]


async def test_without_a_settle_window_the_first_arrival_goes_first(tmp_path: Path) -> None:
    """The reference for the test above: what the window prevents."""
    async with Store.open(tmp_path / "q.db", site_tz=BERLIN, window_seconds=60) as store:
        await _ingest(store, _swipe("out", MORNING + timedelta(hours=8), Action.OUT))
        jobs = await store.claim("go2clock", limit=10, now=time.time())
        assert [job.event_key for job in jobs] == ["out"]


async def test_a_punch_older_than_one_applied_is_held_at_a_sink_that_keeps_state(
    tmp_path: Path,
) -> None:
    path = tmp_path / "q.db"
    async with Store.open(path, site_tz=BERLIN, window_seconds=60) as store:
        await _ingest(store, _swipe("in", MORNING, Action.IN))
        await _ingest(store, _swipe("break", MORNING + timedelta(hours=4), Action.BREAK_START))
        for sink in ("mctime", "go2clock"):
            for _ in range(2):
                claim = await store.claim_batch(sink, limit=10, now=time.time(), hold_late=True)
                for job in claim.jobs:
                    await store.settle(job, Result.delivered(), retry_at=0, now=time.time())
        await _ingest(store, _swipe("late", MORNING + timedelta(hours=2), Action.BREAK_START))

        claim = await store.claim_batch("mctime", limit=10, now=time.time(), hold_late=True)
        assert claim.jobs == []
        [(job, reason)] = claim.late
        assert job.event_key == "late"
        assert reason == "late: older than the last action sent at 2026-11-23T12:00:00+01:00"
        state, attempts, error = query(
            path,
            "SELECT d.state, d.attempts, d.last_error FROM deliveries AS d"
            " JOIN events AS e ON e.id = d.event_id WHERE e.key = 'late' AND d.sink = 'mctime'",
        )[0]
        assert (state, attempts, error) == ("held", 0, reason)  # nothing sent: no attempt

        # Go2Clock keeps punches, not state: the same late punch simply goes.
        go2clock = await store.claim_batch("go2clock", limit=10, now=time.time())
        assert [job.event_key for job in go2clock.jobs] == ["late"]

        # An operator who decides it must go anyway releases it: it goes, out of order.
        held_id = query(path, "SELECT id FROM deliveries WHERE state = 'held'")[0][0]
        moved = await store.release_held([held_id], now=time.time())
        assert moved.changed == [held_id]
        claim = await store.claim_batch("mctime", limit=10, now=time.time(), hold_late=True)
        assert [job.event_key for job in claim.jobs] == ["late"]
        assert claim.late == []
    assert query(path, "SELECT change FROM repairs") == [("held -> pending (released as is)",)]


async def test_a_late_swipe_that_would_change_an_inferred_direction_is_held(
    tmp_path: Path,
) -> None:
    """08:00 and 17:00 without actions are in and out. A 12:00 swipe arriving afterwards
    would make 17:00 an `in`: it is held with the reason, and nothing stored is rewritten."""
    path = tmp_path / "q.db"
    async with Store.open(path, site_tz=BERLIN, window_seconds=60) as store:
        await _ingest(
            store, _swipe("a", MORNING, None), _swipe("c", MORNING.replace(hour=17), None)
        )
        [reason] = await _ingest(store, _swipe("b", MORNING.replace(hour=12), None))
    assert reason == (
        "late: this out at 2026-11-23T12:00:00+01:00 arrived after the out at"
        " 2026-11-23T17:00:00+01:00 was inferred without it; booking it would make that one in"
    )
    rows = query(
        path,
        "SELECT e.key, e.action, d.state FROM events AS e JOIN deliveries AS d"
        " ON d.event_id = e.id ORDER BY e.key, d.sink",
    )
    assert {(key, action) for key, action, _ in rows} == {("a", "in"), ("b", "out"), ("c", "out")}
    assert {state for key, _, state in rows if key == "b"} == {"held"}
    assert {state for key, _, state in rows if key != "b"} == {"pending"}


async def test_a_late_swipe_that_changes_nothing_goes_as_usual(tmp_path: Path) -> None:
    """A late explicit `out` at 06:00 before an inferred `in` at 08:00: still `in` after it."""
    path = tmp_path / "q.db"
    async with Store.open(path, site_tz=BERLIN, window_seconds=60) as store:
        await _ingest(store, _swipe("a", MORNING, None))
        [reason] = await _ingest(store, _swipe("early", MORNING.replace(hour=6), Action.OUT))
    assert reason is None
    assert {row[0] for row in query(path, "SELECT state FROM deliveries")} == {"pending"}


# --- through the broker and the three vendors -----------------------------------------------

GATE_A, GATE_B = "clockin/gate-a/events", "clockin/gate-b/events"


def _punch(topic: str, badge: str, action: str, hour: int, minute: int = 0) -> tuple[str, bytes]:
    when = datetime(2026, 11, 24, hour, minute, tzinfo=BERLIN)
    payload = {"id": f"{badge}-{action}-{hour}{minute:02}", "badge": badge, "action": action}
    return topic, json.dumps({**payload, "time": when.isoformat()}).encode()


def _timetrack_settled_for(fakes: Vendors, people: int) -> bool:
    live = fakes.timetrack.live()
    return len(live) == people and all(a.get("to") for a in live)


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


async def test_a_terminal_back_after_two_hours_never_books_out_of_order(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Gate B: in 08:00, a break 10:00-10:20, delivered. Gate A, offline since 08:30, then
    publishes its buffer: a break 09:00-09:15. Then out 16:30 at gate B."""
    badges = ["04AA", "04BB"]
    async with (
        vendors(tmp_path, broker) as fakes,
        running_bridge(settings_from(fakes.config)) as bridge,
    ):
        live = [("in", 8, 0), ("break_start", 10, 0), ("break_end", 10, 20)]
        await publish(broker.port, [_punch(GATE_B, b, *p) for p in live for b in badges])

        async def breaks_ended() -> bool:
            return len(fakes.mctime.posts()) >= 6 and len(fakes.go2clock.records) >= 6

        await wait_until(breaks_ended, timeout=20, what="the live punches delivered")
        buffer = [("break_start", 9, 0), ("break_end", 9, 15)]
        await publish(broker.port, [_punch(GATE_A, b, *p) for p in buffer for b in badges])
        await publish(broker.port, [_punch(GATE_B, b, "out", 16, 30) for b in badges])

        async def all_settled() -> bool:
            return (
                len(fakes.go2clock.records) >= 12
                and len(fakes.mctime.entries) >= 2
                and _timetrack_settled_for(fakes, 2)
            )

        await wait_until(all_settled, timeout=30, what="every punch settled")
        await asyncio.sleep(0.5)  # anything extra would arrive now
        held = json.loads(await _cli(fakes.config, "held", "list", "--json"))
        metrics = bridge.metrics.registry
        late = {
            sink: metrics.get_sample_value("clockin_held_total", {"sink": sink, "reason": "late"})
            for sink in ("go2clock", "mctime", "timetrack")
        }
    assert late == {"go2clock": None, "mctime": 4.0, "timetrack": 4.0}

    # Go2Clock: every punch once, the late ones included.
    punches = fakes.go2clock.punches_by_key()
    assert len(punches) == 12
    assert max(punches.values()) == 1
    # McTime: each POST after the one before in event time; one entry per person with the
    # 10:00-10:20 break; no clock left running.
    for user in ("mc-ana", "mc-ben"):
        times = [r["body"]["dateTime"] for r in fakes.mctime.posts() if r["body"]["userId"] == user]
        assert times == sorted(times)
    assert len(fakes.mctime.entries) == 2
    for entry in fakes.mctime.entries:
        assert entry["from"].isoformat() == "2026-11-24T08:00:00+01:00"
        assert entry["to"].isoformat() == "2026-11-24T16:30:00+01:00"
        assert [(b["from"].hour, b["to"].minute) for b in entry["breaks"]] == [(10, 20)]
    assert fakes.mctime.clocks == {}
    # TimeTrack: one attendance each, the 20-minute break only.
    for attendance in fakes.timetrack.live():
        assert attendance["from"] == "2026-11-24T07:00:00.000Z"
        assert attendance["to"] == "2026-11-24T15:30:00.000Z"
        assert attendance["breakMinutes"] == 20
    # The buffered punches wait for an operator at both stateful sinks, with the reason.
    assert sorted((row["sink"], row["action"]) for row in held) == sorted(
        (sink, action)
        for sink in ("mctime", "timetrack")
        for action in ("break_start", "break_end")
        for _ in badges
    )
    assert {row["last_error"] for row in held} == {
        "late: older than the last action sent at 2026-11-24T10:20:00+01:00"
    }


async def test_near_simultaneous_arrivals_go_out_in_event_order(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """The `out` (gate A) is published just before the `in` (gate B) of the same shift: with
    dispatch.settle_seconds both are stored before either is due, and McTime gets them in
    event order: one closed entry, nothing held."""
    async with vendors(tmp_path, broker) as fakes:
        config = yaml.safe_load(fakes.config.read_text())
        config["dispatch"] = {"settle_seconds": 2}
        fakes.config.write_text(yaml.safe_dump(config))
        async with running_bridge(settings_from(fakes.config)):
            await publish(broker.port, [_punch(GATE_A, "04AA", "out", 16, 30)])
            await publish(broker.port, [_punch(GATE_B, "04AA", "in", 8, 0)])

            async def closed() -> bool:
                return len(fakes.mctime.entries) >= 1 and _timetrack_settled_for(fakes, 1)

            await wait_until(closed, timeout=20, what="the shift closed at McTime and TimeTrack")
            await asyncio.sleep(0.5)
        held = json.loads(await _cli(fakes.config, "held", "list", "--json"))
    assert held == []
    [entry] = fakes.mctime.entries
    assert entry["from"].isoformat() == "2026-11-24T08:00:00+01:00"
    assert entry["to"].isoformat() == "2026-11-24T16:30:00+01:00"
    assert fakes.mctime.clocks == {}
    assert [r["body"]["action"] for r in fakes.mctime.posts()] == ["start", "stop"]
