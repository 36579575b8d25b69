"""Rejected payloads are bounded: 16 KiB kept per row (with the full size and a sha256), and a
total cap, oldest pruned first and counted. Real SQLite files through the public Store API."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bridge.events import ClockEvent
from bridge.store import Rejection, Store
from bridge.store.connection import _split_sql
from bridge.store.rejected import PAYLOAD_KEPT, footprint
from bridge.store.schema import MIGRATIONS
from tests.test_cli import cli, write_config

BERLIN = ZoneInfo("Europe/Berlin")
MORNING = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
TOPIC = "clockin/door-1/events"
KIB = 1024
MIB = 1024 * KIB


@contextlib.asynccontextmanager
async def opened(db: Path, *, cap: int | None = None) -> AsyncIterator[Store]:
    async with Store.open(db, site_tz=BERLIN, rejected_max_bytes=cap) as store:
        yield store


def nobody(event: ClockEvent) -> dict[str, str | None]:
    return {}


def junk(n: int, *, size: int = 100, topic: str = TOPIC) -> Rejection:
    prefix = f"junk-{n}:".encode()
    payload = (prefix * (size // len(prefix) + 1))[:size]
    return Rejection(topic, "canonical", payload, "payload is not JSON", MORNING)


async def reject(store: Store, items: list[Rejection]) -> None:
    stored = await store.ingest(items, resolve=nobody, received_at=MORNING)
    assert {s.status for s in stored} == {"rejected"}


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


def budget(db: Path) -> tuple[int, int, int]:
    [row] = rows(db, "SELECT max_bytes, stored_bytes, pruned FROM rejected_budget")
    return row


def file_bytes(db: Path) -> int:
    """The database file, with whatever the WAL still holds checkpointed into it."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db.stat().st_size


# --- per row -------------------------------------------------------------------------------


async def test_a_row_keeps_16_kib_with_the_original_size_and_sha256(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    big = bytes(range(256)) * 256  # 64 KiB, not UTF-8
    small = b'{"badge": '
    async with opened(db) as store:
        await reject(
            store, [Rejection(TOPIC, "canonical", p, "bad", MORNING) for p in (big, small)]
        )
    kept = rows(db, "SELECT length(payload), payload, payload_size, payload_sha256 FROM rejected")
    assert kept == [
        (PAYLOAD_KEPT, big[:PAYLOAD_KEPT], 64 * KIB, hashlib.sha256(big).hexdigest()),
        (len(small), small, len(small), hashlib.sha256(small).hexdigest()),
    ]
    assert PAYLOAD_KEPT == 16384


# --- the cap -------------------------------------------------------------------------------


async def test_past_the_cap_the_oldest_are_pruned_first_and_counted(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    one = footprint(payload_kept=1000, topic=TOPIC, reason="payload is not JSON", fmt="canonical")
    async with opened(db, cap=10 * one) as store:
        for n in range(10):  # exactly at the cap: nothing pruned
            await reject(store, [junk(n, size=1000)])
        assert budget(db) == (10 * one, 10 * one, 0)
        await reject(store, [junk(10, size=1000)])  # one more: the oldest goes
        await reject(store, [junk(n, size=1000) for n in range(11, 14)])  # a batch: three more
        status = await store.status(now=time.time())
    ids = [row[0] for row in rows(db, "SELECT id FROM rejected ORDER BY id")]
    assert ids == list(range(5, 15)), "the newest ten are kept"
    assert budget(db) == (10 * one, 10 * one, 4)
    assert rows(db, "SELECT SUM(footprint) FROM rejected") == [(10 * one,)], "running total"
    assert (status["rejected"], status["rejected_pruned"]) == (10, 4)
    assert status["rejected_bytes"] == 10 * one


async def test_a_big_row_prunes_as_many_small_ones_as_it_needs(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    async with opened(db, cap=64 * KIB) as store:
        await reject(store, [junk(n) for n in range(100)])  # 100 small rows, ~26 KiB
        await reject(store, [junk(100, size=64 * KIB)] * 3)  # 3 x 16 KiB kept: ~49 KiB more
    max_bytes, stored, pruned = budget(db)
    assert stored <= max_bytes
    assert pruned > 0
    left = rows(db, "SELECT MIN(id), COUNT(*) FROM rejected")[0]
    assert left == (1 + pruned, 103 - pruned), "only the oldest went"


async def test_a_lower_cap_at_start_prunes_at_once_and_the_count_survives(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    async with opened(db) as store:
        await reject(store, [junk(n, size=10 * KIB) for n in range(100)])
    assert budget(db)[0] == 64 * MIB, "the default cap"
    async with opened(db, cap=100 * KIB):
        pass
    max_bytes, stored, pruned = budget(db)
    assert (max_bytes, pruned) == (100 * KIB, 100 - rows(db, "SELECT COUNT(*) FROM rejected")[0][0])
    assert stored <= max_bytes
    async with opened(db) as store:  # no cap given (a command): the recorded one stays
        status = await store.status(now=time.time())
    assert (status["rejected_max_bytes"], status["rejected_pruned"]) == (100 * KIB, pruned)
    config = {"site": {"timezone": "Europe/Berlin"}, "store": {"path": str(db)}}
    result = cli("status", "--config", str(write_config(tmp_path, config)), cwd=tmp_path)
    assert f"rejected payloads: {100 - pruned}, {pruned} older ones pruned" in result.stdout


async def test_junk_grows_the_file_by_at_most_the_cap(tmp_path: Path) -> None:
    """2,000 x 64 KiB payloads and 500 tiny ones on 60 KB topics with a 4 MiB cap: without
    the cap they took 162 MB (the issue's measurement); freed pages are reused."""
    db = tmp_path / "q.db"
    cap = 4 * MIB
    async with opened(db, cap=cap):
        pass
    before = file_bytes(db)
    async with opened(db, cap=cap) as store:
        for start in range(0, 2000, 100):
            await reject(store, [junk(n, size=64 * KIB) for n in range(start, start + 100)])
        long_topic = "clockin/" + "x" * 60_000 + "/events"
        for start in range(0, 500, 100):
            await reject(store, [junk(n, topic=long_topic) for n in range(start, start + 100)])
        status = await store.status(now=time.time())
    growth = file_bytes(db) - before
    assert growth <= cap * 1.1 + 256 * KIB, f"grew {growth} bytes for a {cap} byte cap"
    assert status["rejected_bytes"] <= cap
    kept = status["rejected"]
    assert status["rejected_pruned"] == 2500 - kept
    assert rows(db, "SELECT MAX(length(payload)) FROM rejected") == [(100,)], "the newest kept"


async def test_a_database_from_before_the_cap_is_counted_on_upgrade(tmp_path: Path) -> None:
    """Migration 6 on a gateway's existing database: its rows count against the cap."""
    db = tmp_path / "q.db"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        for script in MIGRATIONS[:5]:
            for statement in _split_sql(script):
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 5")
        for _ in range(50):
            conn.execute(
                "INSERT INTO rejected (received_at, topic, format, payload, payload_size, reason)"
                " VALUES ('2026-11-23T07:00:00.000000Z', ?, 'canonical', ?, 65536, 'old')",
                (TOPIC, bytes(64 * KIB)),
            )
    async with opened(db, cap=1 * MIB) as store:
        status = await store.status(now=time.time())
        await reject(store, [junk(50)])
    assert status["rejected_bytes"] <= 1 * MIB
    assert status["rejected"] + status["rejected_pruned"] == 50
    assert rows(db, "SELECT payload_sha256 FROM rejected ORDER BY id LIMIT 1") == [(None,)]
    assert rows(db, "SELECT SUM(footprint) FROM rejected") == [(budget(db)[1],)]


async def test_rejected_page_reads_newest_first_below_an_id(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    async with opened(db) as store:
        await reject(store, [junk(n) for n in range(30)])
        await store.mark_reprocessed(29, event_key="k", at="2026-11-23T07:00:00.000000Z")
        first = await store.rejected_page(limit=10)
        second = await store.rejected_page(limit=10, before=first[-1]["id"])
        waiting = await store.rejected_page(limit=3, include_reprocessed=False)
        one = await store.rejected_row(5)
    assert [r["id"] for r in first] == list(range(30, 20, -1))
    assert [r["id"] for r in second] == list(range(20, 10, -1))
    assert [r["id"] for r in waiting] == [30, 28, 27]
    assert all("payload" not in r for r in first + second)
    assert one is not None
    assert bytes(one["payload"]) == junk(4).payload
    assert one["payload_sha256"] == hashlib.sha256(junk(4).payload).hexdigest()
