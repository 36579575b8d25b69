"""The whole path with real parts: mosquitto, the bridge, SQLite, the fake Go2Clock."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import (
    API_KEY,
    canonical,
    event_time,
    publish,
    running_bridge,
    settings_from,
    wait_until,
    write_config,
    write_directory,
)

TOPIC = "clockin/gate1/events"


def _db_rows(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


async def test_n_events_become_exactly_n_correct_punches(broker: Mosquitto, tmp_path: Path):
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        settings = settings_from(write_config(tmp_path, broker_port=broker.port, go2clock_url=url))
        async with running_bridge(settings):
            await publish(broker.port, [(TOPIC, canonical(n)) for n in range(300)])
            await fake.wait_for_records(300, timeout=30)
    punches = fake.punches_by_key()
    assert len(punches) == 300
    assert set(punches.values()) == {1}
    first = next(r for r in fake.records if r["checktime"] == "2026-11-23T06:00:00")
    # 05:00 UTC is 06:00 in Berlin (the account's zone defaults to site.timezone)
    assert first["userid"] == "1000"
    assert first["checktype"] == "0"
    assert first["deviceserial"] == "gate1"


async def test_redelivered_and_double_swiped_events_are_not_forwarded(
    broker: Mosquitto, tmp_path: Path
):
    fake = FakeGo2Clock(api_key=API_KEY)
    base = event_time(0)
    same = json.dumps({"id": "a1", "badge": "B0001", "action": "in", "time": base.isoformat()})
    again_20s = json.dumps(
        {
            "id": "a2",
            "badge": "B0001",
            "action": "in",
            "time": (base.replace(second=20)).isoformat(),
        }
    )
    out = json.dumps(
        {"id": "a3", "badge": "B0001", "action": "out", "time": base.replace(second=30).isoformat()}
    )
    async with running_fake_go2clock(fake) as url:
        settings = settings_from(write_config(tmp_path, broker_port=broker.port, go2clock_url=url))
        async with running_bridge(settings):
            messages = [(TOPIC, same.encode()), (TOPIC, same.encode()), (TOPIC, again_20s.encode())]
            await publish(broker.port, [*messages, (TOPIC, out.encode())])
            await fake.wait_for_records(2, timeout=10)
            await wait_until(
                lambda: _settled(settings.store.path, 2), timeout=10, what="2 deliveries"
            )
    assert sorted(r["checktype"] for r in fake.records) == ["0", "1"]
    statuses = _db_rows(settings.store.path, "SELECT key, status FROM events ORDER BY id")
    assert statuses == [
        ("gate1/a1", "accepted"),
        ("gate1/a2", "duplicate"),
        ("gate1/a3", "accepted"),
    ]


async def _settled(db: Path, count: int) -> bool:
    rows = _db_rows(db, "SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'")
    return rows[0][0] >= count


async def test_bad_payloads_are_kept_and_do_not_stall_ingest(broker: Mosquitto, tmp_path: Path):
    fake = FakeGo2Clock(api_key=API_KEY)
    bad = [b"not json", b'{"badge": "B0001", "action": "sideways"}', b"x" * 20000, b"[1,2]"]
    async with running_fake_go2clock(fake) as url:
        settings = settings_from(write_config(tmp_path, broker_port=broker.port, go2clock_url=url))
        async with running_bridge(settings):
            messages = [(TOPIC, payload) for payload in bad] + [(TOPIC, canonical(1))]
            await publish(broker.port, messages)
            await fake.wait_for_records(1, timeout=10)
    rows = _db_rows(settings.store.path, "SELECT topic, payload_size, reason FROM rejected")
    assert len(rows) == 4
    assert all(topic == TOPIC for topic, _, _ in rows)
    assert rows[2][1] == 20000
    assert "16 KiB" in rows[2][2]
    assert "action" in rows[1][2]


async def test_unknown_badge_is_held_then_delivered_once_mapped(broker: Mosquitto, tmp_path: Path):
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        settings = settings_from(write_config(tmp_path, broker_port=broker.port, go2clock_url=url))
        async with running_bridge(settings):
            await publish(broker.port, [(TOPIC, canonical(1, badge="NEWCARD99"))])
            await wait_until(
                lambda: _has_state(settings.store.path, "unmapped"), timeout=10, what="unmapped"
            )
            assert fake.records == []
            assert settings.directory.path is not None
            write_directory(settings.directory.path, {"NEWCARD99": "4242"})
            records = await fake.wait_for_records(1, timeout=10)
    assert records[0]["userid"] == "4242"


async def _has_state(db: Path, state: str) -> bool:
    rows = _db_rows(db, f"SELECT COUNT(*) FROM deliveries WHERE state = '{state}'")
    return rows[0][0] > 0
