"""Who opens the database decides what opening does: only the daemon creates, checks and
migrates it; a command works on it as the daemon left it, and a view cannot write at all."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import structlog

from bridge.events import Action, ClockEvent
from bridge.store import Incoming, Store, StoreError, StoreRole, StoreWriteError
from bridge.store.schema import MIGRATIONS

BERLIN = ZoneInfo("Europe/Berlin")


def _swipe(key: str) -> Incoming:
    event = ClockEvent(
        key=key,
        terminal="door-1",
        badge="B1",
        user=None,
        action=Action.IN,
        time=datetime(2026, 11, 23, 7, tzinfo=UTC),
        time_given=True,
    )
    return Incoming(event, "clockin/door-1/events")


def _user_version(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


async def _daemon_database(path: Path) -> None:
    async with Store.open(path, site_tz=BERLIN) as store:
        await store.ingest([_swipe("k1")], resolve=lambda _e: {}, received_at=datetime.now(UTC))


@pytest.mark.parametrize("role", [StoreRole.ADMIN, StoreRole.READ_ONLY])
async def test_a_command_never_creates_a_database(tmp_path: Path, role: StoreRole) -> None:
    path = tmp_path / "var" / "bridge.db"
    with pytest.raises(StoreError, match="no database at"):
        async with Store.open(path, site_tz=BERLIN, role=role):
            pass
    assert not path.parent.exists()


@pytest.mark.parametrize("role", [StoreRole.ADMIN, StoreRole.READ_ONLY])
async def test_a_command_never_migrates_the_daemons_database(
    tmp_path: Path, role: StoreRole
) -> None:
    """An older database stays as it is until the daemon, which owns it, upgrades it."""
    path = tmp_path / "bridge.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(MIGRATIONS[0])
        db.execute("PRAGMA user_version = 1")
        db.commit()
    with pytest.raises(StoreError, match="start the daemon once to upgrade it"):
        async with Store.open(path, site_tz=BERLIN, role=role):
            pass
    assert _user_version(path) == 1
    async with Store.open(path, site_tz=BERLIN):  # the daemon
        pass
    assert _user_version(path) == len(MIGRATIONS)


async def test_a_read_only_view_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    await _daemon_database(path)
    async with Store.open(path, site_tz=BERLIN, role=StoreRole.READ_ONLY) as store:
        status = await store.status(now=0.0)
        assert sum(status["events"].values()) == 1
        with pytest.raises(StoreWriteError, match="readonly"):
            await store.ingest([_swipe("k2")], resolve=lambda _e: {}, received_at=datetime.now(UTC))
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT key FROM events").fetchall() == [("k1",)]


async def test_an_admin_command_writes_on_the_daemons_database(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    await _daemon_database(path)
    async with Store.open(path, site_tz=BERLIN, role=StoreRole.ADMIN) as store:
        await store.ingest([_swipe("k2")], resolve=lambda _e: {}, received_at=datetime.now(UTC))
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT key FROM events ORDER BY id").fetchall() == [("k1",), ("k2",)]


async def test_a_command_does_not_run_the_integrity_check(tmp_path: Path) -> None:
    """quick_check reads the whole file (a minute on an SD card with years of history): the
    daemon runs it at start, a command on the live database does not. A damaged page the
    command does not read is left for the daemon to report."""
    path = tmp_path / "bridge.db"
    await _daemon_database(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE filler (x BLOB)")
        db.executemany("INSERT INTO filler VALUES (zeroblob(4000))", [()] * 50)
        db.commit()
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'filler'").fetchone()
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    # Scribble over the filler table's root page only (pages count from 1). Not a page after
    # it: with auto_vacuum (new databases) those may be pointer-map pages or other tables'.
    with path.open("r+b") as raw:
        raw.seek((root[0] - 1) * page_size)
        raw.write(b"\xde\xad" * (page_size // 2))
    async with Store.open(path, site_tz=BERLIN, role=StoreRole.READ_ONLY) as store:
        assert sum((await store.status(now=0.0))["events"].values()) == 1
    with pytest.raises(StoreError, match=r"not a usable SQLite database|integrity check"):
        async with Store.open(path, site_tz=BERLIN):
            pass


async def test_another_processs_commit_signals_work_and_the_daemons_own_do_not(
    tmp_path: Path,
) -> None:
    """A repair command commits on its own connection: the daemon's dispatchers wake at once.
    The daemon's own commits already signal what they change, so they do not wake everyone."""
    path = tmp_path / "bridge.db"
    async with Store.open(path, site_tz=BERLIN) as store:
        wake = store.work.event("go2clock")
        watcher = asyncio.create_task(store.watch_other_writers(interval=0.01))
        try:
            await asyncio.sleep(0.05)  # the watcher has read the version once
            await store.ingest([_swipe("k1")], resolve=lambda _e: {}, received_at=datetime.now(UTC))
            wake.clear()
            await asyncio.sleep(0.1)
            assert not wake.is_set(), "its own commit woke the dispatchers a second time"
            async with Store.open(path, site_tz=BERLIN, role=StoreRole.ADMIN) as command:
                await command.ingest(
                    [_swipe("k2")], resolve=lambda _e: {}, received_at=datetime.now(UTC)
                )
            await asyncio.wait_for(wake.wait(), timeout=2)
        finally:
            watcher.cancel()


async def test_a_repair_by_another_process_is_logged_by_the_daemon(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    async with Store.open(path, site_tz=BERLIN) as store:
        resolve = lambda _e: {"go2clock": "p1"}  # noqa: E731
        await store.ingest([_swipe("k1")], resolve=resolve, received_at=datetime.now(UTC))
        with structlog.testing.capture_logs() as logs:
            watcher = asyncio.create_task(store.watch_other_writers(interval=0.01))
            try:
                await asyncio.sleep(0.05)
                async with Store.open(path, site_tz=BERLIN, role=StoreRole.ADMIN) as command:
                    [delivery_id] = await command.ids_in("pending")
                    moved = await command.move([delivery_id], expect="pending", to="dropped")
                    assert moved.changed == [delivery_id]
                    # a refused change (no longer pending) leaves no trace
                    await command.move([delivery_id], expect="pending", to="dropped")

                async def logged() -> bool:
                    return any(entry["event"] == "repair.applied" for entry in logs)

                async with asyncio.timeout(5):
                    while not await logged():
                        await asyncio.sleep(0.01)
                await asyncio.sleep(0.1)
            finally:
                watcher.cancel()
    repairs = [entry for entry in logs if entry["event"] == "repair.applied"]
    assert len(repairs) == 1
    assert repairs[0]["change"] == "pending -> dropped"
    assert repairs[0]["ids"] == [delivery_id]
    assert repairs[0]["by"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another user")
@pytest.mark.parametrize("role", [StoreRole.ADMIN, StoreRole.READ_ONLY])
async def test_root_running_a_command_leaves_the_database_to_its_owner(
    tmp_path: Path, role: StoreRole
) -> None:
    """`sudo clockin-bridge status` while the daemon is stopped creates the WAL's -wal and -shm
    files: they must belong to the daemon's user, or it cannot open its database again."""
    path = tmp_path / "bridge.db"
    await _daemon_database(path)
    nobody = 65534
    os.chown(path, nobody, nobody)
    assert not path.with_name("bridge.db-wal").exists()  # the daemon closed cleanly
    async with Store.open(path, site_tz=BERLIN, role=role) as store:
        await store.status(now=0.0)
    for suffix in ("-wal", "-shm"):
        sidecar = path.with_name("bridge.db" + suffix)
        if sidecar.exists():
            assert (sidecar.stat().st_uid, sidecar.stat().st_gid) == (nobody, nobody), suffix
