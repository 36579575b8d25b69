"""A damaged database file: the bridge refuses it with a clear message and never overwrites or
deletes it. A start checks what it can afford (header, schema, small tables, the pages it
reads); damage elsewhere is caught by the whole-file check the daemon runs while serving (and
by `backup`), which then refuses every write."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.events import Action, ClockEvent
from bridge.store import Incoming, Store, StoreWriteError, utc_text
from bridge.store.integrity import IntegrityWatch, Marker, read_marker, write_marker
from tests.broker import Mosquitto
from tests.faults.common import logged, start_bridge
from tests.harness import (
    canonical,
    eventually,
    publish,
    running_bridge,
    settings_from,
    wait_until,
    write_config,
)

BERLIN = ZoneInfo("Europe/Berlin")


def _swipe(key: str) -> ClockEvent:
    return ClockEvent(
        key=key,
        terminal="hall",
        badge="B0001",
        user=None,
        action=Action.IN,
        time=datetime.now(UTC),
        time_given=True,
    )


def _damaged_database(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE filler (id INTEGER PRIMARY KEY, text TEXT)")
        db.execute("CREATE INDEX filler_text ON filler(text)")
        db.executemany(
            "INSERT INTO filler (text) VALUES (?)", [(f"row {n:06d}" * 8,) for n in range(5000)]
        )
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(page * 3, len(data) - page, page * 7):  # scribble over some pages
        data[offset + 100 : offset + 400] = b"\xa5" * 300
    path.write_bytes(bytes(data))


def test_a_damaged_database_stops_the_start_and_is_left_alone(tmp_path: Path):
    db = tmp_path / "bridge.db"
    _damaged_database(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    config = write_config(tmp_path, broker_port=1, go2clock_url="http://127.0.0.1:1")
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("clockin-bridge: database error:")
    assert str(db) in message
    assert "left untouched" in message
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("bridge.db")) == [
        "bridge.db"
    ]


# --- the start checks only what it can afford; the whole file is checked while serving -----


def _bridge_command(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _history(path: Path, events: int = 3000) -> None:
    """A daemon's database with `events` delivered events of the last days (none old enough
    for retention), written in bulk as bench/retention.py does."""
    async with Store.open(path, site_tz=BERLIN):
        pass  # created and migrated as the daemon does
    now = time.time()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("BEGIN")
        for n in range(1, events + 1):
            moment = datetime.fromtimestamp(now - 86400 + n, UTC)
            text = utc_text(moment)
            db.execute(
                "INSERT INTO events (id, key, terminal, subject, badge, action, action_inferred,"
                " event_time, local_day, time_given, received_at, status, topic)"
                " VALUES (?, ?, 'door', ?, ?, 'in', 0, ?, ?, 1, ?, 'accepted', 'door/events')",
                (
                    n,
                    f"old-{n}",
                    f"badge:B{n % 200:04d}",
                    f"B{n % 200:04d}",
                    text,
                    moment.date().isoformat(),
                    text,
                ),
            )
            db.execute(
                "INSERT INTO deliveries (event_id, sink, person, event_time, state, outcome,"
                " attempts, next_attempt_at, created_at, settled_at)"
                " VALUES (?, 'go2clock', ?, ?, 'delivered', 'delivered', 1, ?, ?, ?)",
                (n, str(1000 + n % 200), text, now, now, now),
            )
        db.execute("COMMIT")


def _damage_a_history_page(path: Path) -> tuple[int, bytes]:
    """Scribble over a leaf page in the middle of the deliveries table, which neither the start
    nor new events read; (its offset, what is written there now)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        leaves = [
            page
            for (page,) in db.execute(
                "SELECT pageno FROM dbstat WHERE name = 'deliveries' AND pagetype = 'leaf'"
                " ORDER BY pageno"
            )
        ]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    assert len(leaves) > 10
    offset = (leaves[len(leaves) // 2] - 1) * page_size
    with path.open("r+b") as raw:
        raw.seek(offset)
        raw.write(b"\xa5" * page_size)
    return offset, b"\xa5" * page_size


def _page_at(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as raw:
        raw.seek(offset)
        return raw.read(size)


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda data: b"\x00" * 16 + data[16:], "no SQLite header"),
        (lambda data: data[: len(data) // 2], "truncated"),
    ],
    ids=["magic", "truncated"],
)
async def test_a_damaged_header_is_refused_at_start(
    tmp_path: Path, damage: Callable[[bytes], bytes], said: str
) -> None:
    db = tmp_path / "bridge.db"
    await _history(db)
    db.write_bytes(damage(db.read_bytes()))
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    config = write_config(tmp_path, broker_port=1, go2clock_url="http://127.0.0.1:1")
    result = _bridge_command("run", config=config)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert f"{db} is not a usable SQLite database" in message
    assert said in message
    assert "left untouched" in message
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


async def test_a_damaged_schema_is_refused_at_start(tmp_path: Path) -> None:
    db = tmp_path / "bridge.db"
    await _history(db)
    with db.open("r+b") as raw:  # page 1: the 100-byte file header, then the schema's b-tree
        raw.seek(100)
        raw.write(b"\xa5" * 8)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    config = write_config(tmp_path, broker_port=1, go2clock_url="http://127.0.0.1:1")
    result = _bridge_command("run", config=config)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("clockin-bridge: database error:")
    assert "left untouched" in message
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


async def test_damage_the_start_does_not_read_is_caught_while_serving(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """The start does not read the whole file, so the bridge comes up; the check in the
    background then finds the damage: not ready, every write refused (so nothing is
    acknowledged to the broker), and the damaged page is still as it was."""
    db = tmp_path / "bridge.db"
    await _history(db)
    offset, scribble = _damage_a_history_page(db)
    inode = db.stat().st_ino
    config = write_config(tmp_path, broker_port=broker.port, go2clock_url="http://127.0.0.1:1")
    async with running_bridge(settings_from(config)) as bridge:
        assert bridge.store is not None
        integrity = bridge.store.integrity
        assert integrity is not None
        await eventually(lambda: integrity.damage is not None, timeout=30)
        [problem] = [p for p in bridge.readiness_problems() if p["check"] == "database"]
        assert "integrity check failed" in str(problem["detail"])
        assert b"clockin_database_damaged 1.0" in bridge.metrics.render()
        with pytest.raises(StoreWriteError):
            await bridge.store.ingest(
                [Incoming(_swipe("after-damage"), "clockin/hall/events")],
                resolve=lambda _e: {},
                received_at=datetime.now(UTC),
            )
        await publish(broker.port, [("clockin/hall/events", canonical(1))])
        await asyncio.sleep(1.0)  # ingest had time to try (and to fail)
    assert db.stat().st_ino == inode
    assert _page_at(db, offset, len(scribble)) == scribble
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as check:
        newest = check.execute("SELECT key FROM events ORDER BY id DESC LIMIT 1").fetchone()
    assert newest == ("old-3000",)  # neither event was stored
    assert not read_marker(db).stopped_cleanly  # damaged: the next start checks at once


async def test_an_unclean_stop_has_the_whole_file_checked_at_once(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """A first start checks at once (no check has passed yet); after a clean stop the next
    check waits a day; after a SIGKILL it runs at once again."""
    db = tmp_path / "bridge.db"
    await _history(db)
    config = write_config(tmp_path, broker_port=broker.port, go2clock_url="http://127.0.0.1:1")
    log = tmp_path / "bridge.log"

    process = await start_bridge(config, log)
    await wait_until(logged(log, "store.checked"), timeout=30, what="the first check")
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    marker = read_marker(db)
    assert marker.stopped_cleanly
    assert marker.checked_at is not None

    process = await start_bridge(config, log)
    await wait_until(logged(log, "bridge.ready", 2), timeout=30, what="the second start")
    await wait_until(logged(log, "store.check_scheduled"), timeout=10, what="a later check")
    assert log.read_text().count('"event": "store.check_started"') == 1
    assert not read_marker(db).stopped_cleanly  # running: a crash now is an unclean stop
    process.kill()
    await process.wait()

    process = await start_bridge(config, log)
    await wait_until(logged(log, "store.check_started", 2), timeout=30, what="a check at once")
    await wait_until(logged(log, "store.checked", 2), timeout=30, what="the check passing")
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), timeout=20) == 0


async def test_commands_do_not_check_the_whole_file_and_backup_does(tmp_path: Path) -> None:
    """`status` answers beside a damaged history page it does not read; `backup` checks its
    whole copy, refuses, writes no backup and leaves the database as it was."""
    db = tmp_path / "bridge.db"
    await _history(db)
    _damage_a_history_page(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    config = write_config(tmp_path, broker_port=1, go2clock_url="http://127.0.0.1:1")

    status = _bridge_command("status", "--json", config=config)
    assert status.returncode in {0, 1}, status.stderr  # 1: the daemon is not running
    assert json.loads(status.stdout)["events"]["accepted"] == 3000

    target = tmp_path / "copy.db"
    backup = _bridge_command("backup", str(target), config=config)
    assert backup.returncode == 1
    assert f"{db} is damaged: its copy fails the integrity check" in backup.stderr
    assert "left untouched" in backup.stderr
    assert not target.exists()
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


async def test_a_clean_stop_before_the_owed_check_passed_keeps_it_owed(tmp_path: Path) -> None:
    """After an unclean stop the check is due at once; a clean stop before it has passed must
    not make the next start wait a day for it."""
    db = tmp_path / "bridge.db"
    await _history(db, events=10)
    write_marker(db, Marker(stopped_cleanly=False, checked_at=time.time() - 60))
    watch = IntegrityWatch(db, read_marker(db))
    watch.started()
    watch.stopped_cleanly()  # stopped before the check ran
    assert not read_marker(db).stopped_cleanly
    again = IntegrityWatch(db, read_marker(db))
    assert again.check_owed
    checking = asyncio.create_task(again.run_forever(_whole_database_expected))
    await eventually(lambda: not again.check_owed, timeout=10)  # run at once, and passed
    checking.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await checking
    again.stopped_cleanly()
    assert read_marker(db).stopped_cleanly


async def _whole_database_expected() -> None:
    pytest.fail("the check found damage in a whole database")
