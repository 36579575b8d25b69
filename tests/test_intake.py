"""Intake resolves people before the write, and a lookup that fails rejects only its event."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from bridge.events import Action, ClockEvent
from bridge.store import Incoming, Store
from bridge.store.records import Identified

BERLIN = ZoneInfo("Europe/Berlin")


def _swipe(key: str, badge: str) -> Incoming:
    event = ClockEvent(
        key=key,
        terminal="door-1",
        badge=badge,
        user=None,
        action=Action.IN,
        time=datetime(2026, 11, 23, 7, tzinfo=UTC),
        time_given=True,
    )
    return Incoming(event, "clockin/door-1/events", payload=b'{"badge": "%s"}' % badge.encode())


def _directory(who: Identified) -> Mapping[str, str | None]:
    if who.badge == "B00M":
        msg = "the directory broke on this badge"
        raise RuntimeError(msg)
    return {"go2clock": {"B1": "1001"}.get(who.badge or "")}


async def test_a_lookup_that_fails_rejects_only_its_event(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    async with Store.open(path, site_tz=BERLIN) as store:
        results = await store.ingest(
            [_swipe("k1", "B1"), _swipe("k2", "B00M"), _swipe("k3", "B2")],
            resolve=_directory,
            received_at=datetime.now(UTC),
        )
    assert [r.status for r in results] == ["accepted", "rejected", "unmapped"]
    assert "RuntimeError: the directory broke on this badge" in (results[1].reason or "")
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT key FROM events ORDER BY id").fetchall() == [("k1",), ("k3",)]
        [(payload,)] = db.execute("SELECT payload FROM rejected").fetchall()
    assert payload == b'{"badge": "B00M"}'  # kept for `rejected reprocess` after a fix


async def test_unmapped_deliveries_are_released_by_who_swiped(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    known: dict[str, str] = {}

    def directory(who: Identified) -> Mapping[str, str | None]:
        return {"go2clock": known.get(who.badge or "")}

    async with Store.open(path, site_tz=BERLIN) as store:
        await store.ingest([_swipe("k1", "B7")], resolve=directory, received_at=datetime.now(UTC))
        assert await store.release_unmapped(resolve=directory) == 0
        known["B7"] = "1007"
        assert await store.release_unmapped(resolve=directory) == 1
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT person, state FROM deliveries").fetchall() == [
            ("1007", "pending")
        ]
