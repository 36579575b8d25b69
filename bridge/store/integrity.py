"""Is the database whole? Cheap checks at start; the whole-file check while the daemon serves.

`PRAGMA quick_check` reads every page: with 5,000,000 events (3.4 GB) 33 s with a cold cache on
this machine's virtual disk (docs/BENCHMARKS.md), near systemd's 90 s start timeout on an SD
card. So a start checks only
what is cheap and what it reads itself: the file header, the schema, and every table except the
history tables (SQLite's quick_check(TABLE) reads one table and its indexes). A damaged page
that the start does read raises SQLITE_CORRUPT, which Store.open turns into the same refusal.

The whole-file check runs on a read-only connection and a thread of its own, niced (which, with
no I/O priority set, also lowers its I/O priority under the BFQ/CFQ schedulers): at once after
an unclean stop (or when no check has passed yet), otherwise a day after the last one that
passed, then daily. When it fails, the store refuses every further write (ingest then
acknowledges nothing, so the broker keeps the events), readiness says why, and the file is
never changed. Whether the last stop was clean and when a check last passed are kept in a
small file beside the database (`<database>.integrity`): the database itself is not written for
it, and a file restored from a backup (another inode) counts as an unclean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import structlog

from bridge.store.records import StoreError

log = structlog.get_logger("bridge.store")

# Tables that grow with history; every other table is small and is checked at each start.
HISTORY_TABLES = frozenset({"events", "deliveries", "rejected", "kept_keys"})
FULL_CHECK_EVERY_SECONDS = 86400.0
CHECK_RETRY_SECONDS = 3600.0  # after a check that could not run to its end
BACKGROUND_NICE = 19
SQLITE_MAGIC = b"SQLite format 3\x00"


def is_damage(err: sqlite3.DatabaseError) -> bool:
    """SQLite says the file is damaged (SQLITE_CORRUPT) or not a database (SQLITE_NOTADB)."""
    code = (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF
    return code in {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def header_problem(path: Path) -> str | None:
    """What is wrong with the database file's 100-byte header, or None. A missing or empty file
    is a new database. A file shorter than its header says is truncated, unless a WAL with
    frames may still hold the pages a checkpoint had not yet written."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            header = file.read(100)
    except FileNotFoundError:
        return None
    if size == 0:
        return None
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        return "no SQLite header"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"page size {page_size} in the header is not valid"
    pages = int.from_bytes(header[28:32], "big")
    size_is_valid = header[24:28] == header[92:96]  # change counter == version-valid-for
    wal = wal_path(path)
    wal_frames = wal.exists() and wal.stat().st_size > 0
    if size_is_valid and not wal_frames and pages * page_size > size:
        return f"truncated: the header says {pages} pages, the file holds {size // page_size}"
    return None


TABLES_SQL = "SELECT name FROM sqlite_schema WHERE type = 'table'"


async def check_at_start(db: aiosqlite.Connection, path: Path) -> None:
    """What a start can afford: the header, the schema and the small tables, not the whole
    file. StoreError when any of them is damaged; nothing is written."""
    problem = await asyncio.to_thread(header_problem, path)
    verdict: list[str] = []
    try:
        if problem is None:
            tables = await db.execute_fetchall(TABLES_SQL)
            for check in start_checks([str(row[0]) for row in tables]):
                verdict += problems_in([row[0] for row in await db.execute_fetchall(check)])
    except sqlite3.DatabaseError as err:
        problem = str(err)
    if problem is not None:
        msg = f"{path} is not a usable SQLite database ({problem}); it was left untouched"
        raise StoreError(msg)
    if verdict:
        msg = f"{path} fails the integrity check ({'; '.join(verdict[:3])}); left untouched"
        raise StoreError(msg)


def start_checks(tables: list[str]) -> list[str]:
    """The statements a start runs: quick_check of the schema and of every table but the
    history ones (each with its indexes). Each answers 'ok' or one row per problem."""
    names = ["sqlite_schema", *(name for name in tables if name not in HISTORY_TABLES)]
    quoted = (name.replace('"', '""') for name in names)
    return [f'PRAGMA quick_check("{name}")' for name in quoted]


def problems_in(rows: list[object]) -> list[str]:
    """The problems among quick_check's answer rows, one line each."""
    return [" ".join(str(row).split()) for row in rows if row != "ok"]


@dataclass(frozen=True, slots=True)
class Marker:
    """What the last run left: whether it stopped cleanly, when a whole-file check last passed."""

    stopped_cleanly: bool
    checked_at: float | None


def marker_path(database: Path) -> Path:
    return database.with_name(database.name + ".integrity")


def read_marker(database: Path) -> Marker:
    """The marker, or an unclean stop when it is missing, unreadable or of another file."""
    try:
        data = json.loads(marker_path(database).read_text())
        if data["inode"] != database.stat().st_ino:
            return Marker(stopped_cleanly=False, checked_at=None)
        return Marker(bool(data["stopped_cleanly"]), data["checked_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return Marker(stopped_cleanly=False, checked_at=None)


def write_marker(database: Path, marker: Marker) -> None:
    """Replace the marker atomically and durably: a power cut leaves the old one or the new."""
    path = marker_path(database)
    partial = path.with_name(f".{path.name}.partial")
    data = {
        "stopped_cleanly": marker.stopped_cleanly,
        "checked_at": marker.checked_at,
        "inode": database.stat().st_ino,
    }
    with partial.open("w") as file:
        file.write(json.dumps(data))
        file.flush()
        os.fsync(file.fileno())
    partial.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def next_check_in(marker: Marker, *, now: float) -> float:
    """Seconds until the whole-file check is due: at once after an unclean stop or when none
    has passed yet, otherwise FULL_CHECK_EVERY_SECONDS after the last one that passed."""
    if not marker.stopped_cleanly or marker.checked_at is None:
        return 0.0
    return max(0.0, marker.checked_at + FULL_CHECK_EVERY_SECONDS - now)


class WholeFileCheck:
    """One `PRAGMA quick_check` of the whole file on a read-only connection, in a niced thread
    of its own (not the shared executor, which would stay niced). Cancelling it interrupts
    SQLite and waits for the thread, so nothing is left reading the file."""

    def __init__(self, database: Path) -> None:
        self._database = database
        self._conn: sqlite3.Connection | None = None
        self._opened = threading.Lock()
        self.seconds: float | None = None  # how long the check took, once it has run

    async def verdict(self) -> list[str]:
        """One line per problem; [] when the file is whole."""
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="integrity") as thread:
            running = loop.run_in_executor(thread, self._run)
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                with self._opened:
                    if self._conn is not None:
                        self._conn.interrupt()
                with contextlib.suppress(Exception):
                    await running
                raise

    def _run(self) -> list[str]:
        with contextlib.suppress(OSError):  # a per-thread nice on Linux; elsewhere it is fine
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
        uri = f"{self._database.absolute().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        with self._opened:
            self._conn = conn
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            started = time.monotonic()
            rows = conn.execute("PRAGMA quick_check").fetchall()
            self.seconds = time.monotonic() - started
        except sqlite3.DatabaseError as err:
            if not is_damage(err):
                raise
            return [" ".join(str(err).split())]
        finally:
            with self._opened:
                self._conn = None
            conn.close()
        return problems_in([row[0] for row in rows])


def wal_path(database: Path) -> Path:
    """The database's write-ahead log beside it."""
    return database.with_name(database.name + "-wal")


class IntegrityWatch:
    """The daemon's side of it: the marker at start and at a clean stop, and the whole-file
    check while serving. `damage` is what the failed check found (None while whole)."""

    def __init__(self, database: Path, marker: Marker) -> None:
        self.database = database
        self.marker = marker  # as the last run left it
        self.checked_at = marker.checked_at
        # A check is due at once (an unclean stop, or none has passed) until one passes.
        self.check_owed = next_check_in(marker, now=time.time()) == 0.0
        self.damage: str | None = None
        self.damaged_at: float | None = None

    def started(self) -> None:
        """From now on a crash is an unclean stop: the next start checks the whole file."""
        if self.marker.stopped_cleanly or not marker_path(self.database).exists():
            write_marker(self.database, Marker(stopped_cleanly=False, checked_at=self.checked_at))

    def stopped_cleanly(self) -> None:
        """At a clean stop of a whole database: the next start need not check at once, unless
        the check an unclean stop made due has not passed yet (then it stays due)."""
        if self.damage is None and not self.check_owed:
            write_marker(self.database, Marker(stopped_cleanly=True, checked_at=self.checked_at))

    async def run_forever(self, refuse_writes: Callable[[], Awaitable[None]]) -> None:
        """Check the whole file when due; on damage, refuse writes (once) and stop checking."""
        wait = next_check_in(self.marker, now=time.time())
        if wait:
            log.info("store.check_scheduled", in_seconds=round(wait))
        while True:
            await asyncio.sleep(wait)
            log.info("store.check_started", after_clean_stop=self.marker.stopped_cleanly)
            check = WholeFileCheck(self.database)
            try:
                problems = await check.verdict()
            except Exception:  # the loop's boundary (an I/O error, say): logged, tried later
                log.exception("store.check_failed", retry_in=CHECK_RETRY_SECONDS)
                wait = CHECK_RETRY_SECONDS
                continue
            if problems:
                self.damage, self.damaged_at = "; ".join(problems[:3]), time.time()
                await refuse_writes()
                log.error(
                    "store.damaged",
                    path=str(self.database),
                    problems=problems[:10],
                    action="writes refused, nothing acknowledged; the file is left untouched",
                )
                return
            self.checked_at, self.check_owed = time.time(), False
            marker = Marker(stopped_cleanly=False, checked_at=self.checked_at)
            await asyncio.to_thread(write_marker, self.database, marker)
            log.info("store.checked", seconds=round(check.seconds or 0.0, 1))
            wait = FULL_CHECK_EVERY_SECONDS
