"""Implausible device times are held for an operator, not rejected, end to end: a swipe whose
terminal clock says 2099 or 1999 is stored with its delivery held, listed with both the
device's time and the received time, and delivered once at the received time after
`held complete ID --use-received-time`; a resend is a duplicate; a flood of them is bounded by
the junk budget; the person's later swipes neither read it nor wait for it.

Real parts: mosquitto, the bridge in this process, its SQLite file, the fake Go2Clock, and the
operator's commands in subprocesses beside the running bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import API_KEY, canonical, publish, running_bridge, settings_from, write_config
from tests.test_repair import cli_async

BERLIN = ZoneInfo("Europe/Berlin")
TOPIC = "clockin/gate1/events"
FUTURE = "2099-01-01T00:00:00Z"
PAST = "1999-06-30T12:00:00Z"
CLOSE = timedelta(seconds=20)  # within the double-swipe window
FAR, OLD = "gate1/far-1", "gate1/old-1"  # the stored keys: the terminal's ids, scoped


def _swipe(key: str, badge: str, *, time: str | None = None, action: str | None = "in") -> bytes:
    fields: dict[str, Any] = {"id": key, "badge": badge}
    if time is not None:
        fields["time"] = time
    if action is not None:
        fields["action"] = action
    return json.dumps(fields).encode()


def _rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def _checktime(utc_text: str) -> str:
    """Go2Clock's checktime for a stored UTC time (the account's zone is the site's)."""
    moment = datetime.fromisoformat(utc_text).astimezone(BERLIN)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


async def _held_json(config: Path, tmp_path: Path) -> list[dict[str, Any]]:
    code, out, err = await cli_async(
        "held", "list", "--json", "--config", str(config), cwd=tmp_path
    )
    assert code == 0, err + out
    return json.loads(out)


async def _book_at_received_time(config: Path, tmp_path: Path, delivery_id: int) -> str:
    code, out, err = await cli_async(
        "held",
        "complete",
        str(delivery_id),
        "--use-received-time",
        "--config",
        str(config),
        cwd=tmp_path,
    )
    assert code == 0, err + out
    return out


def _assert_listed(entry: dict[str, Any], received_utc: str) -> None:
    """A held entry shows the device's time (as `time`), the received time, and both in the
    reason."""
    local_received = datetime.fromisoformat(received_utc).astimezone(BERLIN)
    assert entry["received_at"] == local_received.isoformat(timespec="seconds")
    assert entry["last_error"].startswith("implausible time: device said ")
    assert f"received {received_utc[:19]}Z" in entry["last_error"]


async def _wait_for(db: Path, sql: str, expected: list[tuple[Any, ...]]) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            while _rows(db, sql) != expected:
                await asyncio.sleep(0.05)
    assert _rows(db, sql) == expected


async def test_2099_and_1999_are_held_listed_and_booked_once_at_the_received_time(
    broker: Mosquitto, tmp_path: Path
) -> None:
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        config = write_config(tmp_path, broker_port=broker.port, go2clock_url=url)
        settings = settings_from(config)
        db = settings.store.path
        async with running_bridge(settings) as bridge:
            await publish(
                broker.port,
                [
                    (TOPIC, _swipe("far-1", "B0002", time=FUTURE)),
                    (TOPIC, _swipe("old-1", "B0003", time=PAST)),
                    (TOPIC, canonical(1)),  # a valid swipe right behind them
                ],
            )
            await fake.wait_for_records(1, timeout=15)
            await asyncio.sleep(0.3)  # room for a wrong delivery of a held one to show
            assert [r["userid"] for r in fake.records] == ["1001"]
            # Stored, not rejected; held, not delivered.
            assert _rows(db, "SELECT COUNT(*) FROM rejected") == [(0,)]
            assert _rows(
                db,
                "SELECT e.key, e.status, d.state FROM events AS e"
                " JOIN deliveries AS d ON d.event_id = e.id WHERE e.status = 'held' ORDER BY e.key",
            ) == [(FAR, "held", "held"), (OLD, "held", "held")]

            listed = {entry["event_key"]: entry for entry in await _held_json(config, tmp_path)}
            assert set(listed) == {FAR, OLD}
            received = dict(_rows(db, "SELECT key, received_at FROM events"))
            far, old = listed[FAR], listed[OLD]
            _assert_listed(far, received[FAR])
            _assert_listed(old, received[OLD])
            assert far["time"] == "2099-01-01T01:00:00+01:00"  # the device's, site-local
            assert "device said 2099-01-01T00:00:00Z" in far["last_error"]
            assert "(more than 1 day ahead, site.max_future_seconds)" in far["last_error"]
            assert old["time"] == "1999-06-30T14:00:00+02:00"
            assert "(before 2000-01-01T00:00:00Z, site.min_event_time)" in old["last_error"]
            code, table, _ = await cli_async("held", "list", "--config", str(config), cwd=tmp_path)
            assert code == 0
            assert "2099-01-01T01:00:00+01:00" in table
            assert far["received_at"] in table

            for entry in (far, old):
                out = await _book_at_received_time(config, tmp_path, entry["id"])
                assert "booked at its received time" in out
            await fake.wait_for_records(3, timeout=15)
            # Once each, at the time the gateway received it.
            by_user = {r["userid"]: r["checktime"] for r in fake.records}
            assert by_user["1002"] == _checktime(received[FAR])
            assert by_user["1003"] == _checktime(received[OLD])

            # The terminal sends both again: layer 1 knows them.
            before = bridge.ingest.counts["stored"] if bridge.ingest else 0
            await publish(
                broker.port,
                [
                    (TOPIC, _swipe("far-1", "B0002", time=FUTURE)),
                    (TOPIC, _swipe("old-1", "B0003", time=PAST)),
                ],
            )
            assert bridge.ingest is not None
            async with asyncio.timeout(10):
                while bridge.ingest.counts["stored"] < before + 2:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
    assert len(fake.records) == 3
    assert set(fake.punches_by_key().values()) == {1}
    assert _rows(db, "SELECT COUNT(*) FROM events") == [(3,)]
    # The device's time is kept for the audit trail; the repair is traced.
    assert _rows(db, "SELECT key, device_time FROM events WHERE device_time IS NOT NULL") == [
        (FAR, "2099-01-01T00:00:00.000000Z"),
        (OLD, "1999-06-30T12:00:00.000000Z"),
    ]
    changes = [change for (change,) in _rows(db, "SELECT change FROM repairs ORDER BY id")]
    assert len(changes) == 2
    assert all("booked at its received time" in change for change in changes)
    metrics = bridge.metrics.render().decode()
    assert 'clockin_events_held_for_time_total{why="too_far_ahead"} 1.0' in metrics
    assert 'clockin_events_held_for_time_total{why="too_early"} 1.0' in metrics


async def test_a_later_swipe_is_inferred_and_delivered_without_the_held_one(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """The held swipe would be the person's previous one (and a double swipe's original) if
    its time were believed: the later swipes must be decided and delivered as if it were not
    there, and it must not hold them back."""
    # A window that makes a recent time implausible, so the held swipes fall inside the later
    # swipes' inference lookback and double-swipe window: just before the earliest time.
    earliest = datetime.now(UTC) - timedelta(minutes=30)
    limits = {"site": {"min_event_time": earliest.isoformat()}}
    held_at = earliest - CLOSE / 2
    later = (held_at + timedelta(minutes=10)).isoformat()
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        config = write_config(tmp_path, broker_port=broker.port, go2clock_url=url, extra=limits)
        settings = settings_from(config)
        db = settings.store.path
        async with running_bridge(settings):
            await publish(
                broker.port,
                [
                    (TOPIC, _swipe("held-in", "B0005", time=held_at.isoformat())),
                    # Without an action, 10 minutes later: `out` if the held `in` counted.
                    (TOPIC, _swipe("later", "B0005", time=later, action=None)),
                    (TOPIC, _swipe("close-held", "B0006", time=held_at.isoformat())),
                    # An `in` 20 s after the held one: a double swipe if it counted.
                    (
                        TOPIC,
                        _swipe("close", "B0006", time=(held_at + CLOSE).isoformat()),
                    ),
                ],
            )
            await fake.wait_for_records(2, timeout=15)
            await asyncio.sleep(0.3)
            await _wait_for(
                db,
                "SELECT key, action, status FROM events ORDER BY key",
                [
                    ("gate1/close", "in", "accepted"),
                    ("gate1/close-held", "in", "held"),
                    ("gate1/held-in", "in", "held"),
                    ("gate1/later", "in", "accepted"),
                ],
            )
    assert sorted(r["userid"] for r in fake.records) == ["1005", "1006"]


async def test_a_flood_of_implausible_times_is_bounded_by_the_junk_budget(
    broker: Mosquitto, tmp_path: Path
) -> None:
    fake = FakeGo2Clock(api_key=API_KEY)
    budget = {"store": {"rejected_per_terminal_per_minute": 5}}
    flood = [(TOPIC, _swipe(f"far-{n}", "B0007", time=FUTURE)) for n in range(40)]
    async with running_fake_go2clock(fake) as url:
        config = write_config(tmp_path, broker_port=broker.port, go2clock_url=url, extra=budget)
        settings = settings_from(config)
        db = settings.store.path
        async with running_bridge(settings) as bridge:
            await publish(broker.port, [*flood, (TOPIC, canonical(1))])
            await fake.wait_for_records(1, timeout=15)
            assert bridge.ingest is not None
            async with asyncio.timeout(10):
                while sum(bridge.ingest.counts.values()) < len(flood) + 1:
                    await asyncio.sleep(0.05)
            counts = dict(bridge.ingest.counts)
    [(held,)] = _rows(db, "SELECT COUNT(*) FROM events WHERE status = 'held'")
    # The budget, and what refilled it while the flood was read (5 a minute).
    assert 5 <= held <= 6
    assert counts["not_kept"] == len(flood) - held
    assert counts["stored"] == held + 1  # the valid swipe is no junk
    assert [r["userid"] for r in fake.records] == ["1001"]
    metrics = bridge.metrics.render().decode()
    assert f'clockin_events_held_for_time_total{{why="too_far_ahead"}} {held}.0' in metrics
    assert f"clockin_rejected_not_kept_total {len(flood) - held}.0" in metrics
