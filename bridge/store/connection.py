"""The connection: open, integrity check, migrations, and the one transaction helper.

Every write runs in a `BEGIN IMMEDIATE` transaction behind an asyncio.Lock, because the one
shared connection would otherwise interleave statements of different coroutines; writes asked
for together share a transaction (group commit, `StoreBase._write`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Self, TypeVar, cast
from zoneinfo import ZoneInfo

import aiosqlite
import structlog

from bridge.store.durability import FlushPolicy
from bridge.store.group_commit import GroupCommit
from bridge.store.inference import InferenceRules
from bridge.store.integrity import (
    IntegrityWatch,
    check_at_start,
    is_damage,
    read_marker,
    wal_path,
)
from bridge.store.lock import daemon_lock
from bridge.store.records import StoreError, StoreWriteError
from bridge.store.rejected import set_rejected_cap
from bridge.store.repairs import last_repair_id, repairs_after
from bridge.store.schema import MIGRATIONS
from bridge.store.signal import WorkSignal


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script, comments dropped (a ';' in a comment is harmless).
    A ';' ends a statement only where SQLite says it is complete (not inside a trigger)."""
    code = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    statements, current = [], ""
    for part in code.split(";"):
        current += part + ";"
        if sqlite3.complete_statement(current):
            statement = current.strip().removesuffix(";").strip()
            if statement:
                statements.append(statement)
            current = ""
    return statements


WRITE_ERROR_HOLD_SECONDS = 5.0
OTHER_WRITERS_POLL_SECONDS = 0.5
FULL_LOOK_EVERY = 4  # of watch_other_writers' looks, one asks the database in any case
WAL_SIZE_LIMIT = 4 * 1024 * 1024  # SQLite's automatic checkpoint runs at ~1,000 pages (4 MiB)


def _read_only_uri(path: Path) -> str:
    return f"{path.absolute().as_uri()}?mode=ro"


log = structlog.get_logger("bridge.store")

T = TypeVar("T")


async def fetch_all(
    conn: aiosqlite.Connection, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ()
) -> list[aiosqlite.Row]:
    """Every row of `sql` as a list (aiosqlite types its answer as a bare Iterable)."""
    return list(await conn.execute_fetchall(sql, parameters))


def _file_state(path: Path) -> tuple[int, ...] | None:
    """What changes whenever a file is written (None: it cannot be read now)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


class _Call(NamedTuple):
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    durable: bool  # its commit must reach the disk before its caller hears of it
    window: bool = False  # its transaction stays open for store.commit_wait_seconds (ingest)


class _Failed(NamedTuple):
    error: BaseException


def _begin(conn: sqlite3.Connection, calls: list[_Call], synchronous: str) -> list[Any]:
    """On the connection's thread: open a transaction and run `calls` in it. `synchronous`:
    FULL or NORMAL, whether its COMMIT flushes (bridge/store/durability.py)."""
    conn.execute(f"PRAGMA synchronous = {synchronous}")  # between transactions: allowed in WAL
    conn.execute("BEGIN IMMEDIATE")
    return _run_calls(conn, calls)


def _run_calls(conn: sqlite3.Connection, calls: list[_Call]) -> list[Any]:
    """Each call in the open transaction, inside its own savepoint so that one call's error
    undoes only that call (its answer is then a _Failed). Anything else that fails (the
    database itself) rolls the whole transaction back."""
    try:
        answers: list[Any] = []
        for fn, args, *_ in calls:
            conn.execute("SAVEPOINT call")
            try:
                answers.append(fn(conn, *args))
            except Exception as err:  # noqa: BLE001 - handed to that call's caller, raised there
                conn.execute("ROLLBACK TO call")
                answers.append(_Failed(err))
            conn.execute("RELEASE call")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return answers


def _commit(conn: sqlite3.Connection) -> None:
    """Commit; rolled back whole when COMMIT itself fails (e.g. disk full, which can leave the
    transaction open)."""
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class StoreRole(enum.Enum):
    """Who opens the database, which decides what opening it does.

    DAEMON: creates it if missing, checks its integrity (cheaply at start, the whole file in
    the background: bridge.store.integrity), migrates it, sets the WAL and the caps, and reads
    status on a second connection. ADMIN (repair commands) and READ_ONLY
    (views): the database must exist at this release's schema; one connection, nothing
    checked or changed on open, so a command never runs the daemon's work on its live file;
    READ_ONLY cannot write at all.
    """

    DAEMON = "daemon"
    ADMIN = "admin"
    READ_ONLY = "read_only"


def _connect_target(path: Path, role: StoreRole) -> tuple[str, bool]:
    """What to hand sqlite3.connect for `role`, and whether it is a URI."""
    if role is StoreRole.DAEMON:
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path), False
    if not path.exists():  # a command never creates a database
        msg = f"no database at {path} (has the bridge run yet?)"
        raise StoreError(msg)
    mode = "ro" if role is StoreRole.READ_ONLY else "rw"
    return f"{path.absolute().as_uri()}?mode={mode}", True


def give_sidecars_to_owner(database: Path) -> None:
    """Opening a WAL database creates its -wal and -shm files, and a read-only connection
    leaves them behind. Made by root (an operator's `sudo clockin-bridge status`), they would
    lock the daemon's own user out of its database: hand them to the database's owner."""
    if os.geteuid() != 0:
        return
    with contextlib.suppress(OSError):
        owner = database.stat()
        for suffix in ("-wal", "-shm"):
            sidecar = database.with_name(database.name + suffix)
            with contextlib.suppress(FileNotFoundError):
                os.chown(sidecar, owner.st_uid, owner.st_gid)


def _apply_migration(conn: sqlite3.Connection, number: int) -> None:
    """Migration `number` (0-based) and the schema version it brings, in one transaction."""
    for statement in _split_sql(MIGRATIONS[number]):
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {number + 1}")


class StoreBase:
    def __init__(
        self,
        db: aiosqlite.Connection,
        *,
        site_tz: ZoneInfo,
        window_seconds: float,
        inference: InferenceRules | None = None,
        settle_seconds: float = 0.0,
        commit_wait_seconds: float = 0.0,
    ) -> None:
        self._db = db
        self._reader = db  # a read-only connection of its own once open() has one
        self._lock = asyncio.Lock()
        # An ingest's transaction stays open commit_wait_seconds for what comes meanwhile;
        # writes that need no flush (claims of resend-harmless sinks, settles) wait for such a
        # window, up to twice that: at a few swipes a second they then catch the next one
        # (group_commit.py).
        self._writes: GroupCommit[_Call, Any] = GroupCommit(
            begin=self._begin_transaction,
            run=self._run_in_transaction,
            commit=self._commit_transaction,
            lock=self._lock,
            urgent=lambda call: call.durable,
            opens_window=lambda call: call.window,
            window_seconds=commit_wait_seconds,
            linger_seconds=2 * commit_wait_seconds,
        )
        self._began = 0.0  # time.monotonic() of the open transaction's begin
        self._synchronous = "FULL"  # the open transaction's
        self._flushes = FlushPolicy()
        self._site_tz = site_tz
        self._window = window_seconds
        # How a swipe without an action gets one (by shift, not by calendar day).
        self._inference = inference or InferenceRules(tz=site_tz, window_seconds=window_seconds)
        # A new delivery is first due this long after it is stored (dispatch.settle_seconds).
        self._settle_seconds = settle_seconds
        # Set after commits that may make deliveries due; dispatchers wait on it.
        self.work = WorkSignal()
        # A spell of failing writes (disk full, I/O error): the error and since when. It ends
        # once writes have worked for WRITE_ERROR_HOLD_SECONDS, so that a nearly full disk,
        # where small writes pass and big ones fail, reads as one spell and not a flicker.
        self._write_error: tuple[str, float] | None = None
        self._last_write_failure = 0.0
        self._last_write_success = 0.0
        self.last_ingest = 0.0  # time.monotonic() of the last ingest call
        self.integrity: IntegrityWatch | None = None  # the daemon's; None for a command

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        path: Path,
        *,
        site_tz: ZoneInfo,
        window_seconds: float = 60.0,
        inference: InferenceRules | None = None,
        settle_seconds: float = 0.0,
        commit_wait_seconds: float = 0.0,
        rejected_max_bytes: int | None = None,
        role: StoreRole = StoreRole.DAEMON,
    ) -> AsyncIterator[Self]:
        """The database for `role` (see StoreRole). `rejected_max_bytes`: the cap on rejected
        payloads (the daemon passes store.rejected_max_mb; None keeps the one recorded).
        `inference`: the rules for a swipe without an action (None: by default, a shift of at
        most 16 hours). `settle_seconds`: how long a new delivery waits before it is due
        (dispatch.settle_seconds). `commit_wait_seconds`: how long a write that needs no flush
        may wait to share a commit (store.commit_wait_seconds)."""
        target, uri = _connect_target(path, role)
        with daemon_lock(path) if role is StoreRole.DAEMON else contextlib.nullcontext():
            async with cls._connected(
                path,
                target=target,
                uri=uri,
                role=role,
                site_tz=site_tz,
                window_seconds=window_seconds,
                inference=inference,
                settle_seconds=settle_seconds,
                commit_wait_seconds=commit_wait_seconds,
                rejected_max_bytes=rejected_max_bytes,
            ) as store:
                yield store

    @classmethod
    @contextlib.asynccontextmanager
    async def _connected(
        cls,
        path: Path,
        *,
        target: str,
        uri: bool,
        role: StoreRole,
        site_tz: ZoneInfo,
        window_seconds: float,
        inference: InferenceRules | None,
        settle_seconds: float,
        commit_wait_seconds: float,
        rejected_max_bytes: int | None,
    ) -> AsyncIterator[Self]:
        db = await aiosqlite.connect(target, isolation_level=None, uri=uri)
        try:
            db.row_factory = aiosqlite.Row
            store = cls(
                db,
                site_tz=site_tz,
                window_seconds=window_seconds,
                inference=inference,
                settle_seconds=settle_seconds,
                commit_wait_seconds=commit_wait_seconds if role is StoreRole.DAEMON else 0.0,
            )
            await db.execute("PRAGMA busy_timeout = 10000")
            if role is not StoreRole.DAEMON:
                # A command: one connection does it all, and the daemon's checks and
                # migrations are not run again on its live database.
                try:
                    await store._check_current(path)
                    if role is StoreRole.ADMIN:
                        await db.execute("PRAGMA synchronous = FULL")
                    yield store
                finally:
                    give_sidecars_to_owner(path)
                return
            try:
                await store._prepare_for_daemon(path, rejected_max_bytes)
                # The status views scan whole tables (a second with a million deliveries):
                # they read on a connection and thread of their own, so that a /metrics scrape
                # never holds up ingest or delivery. WAL lets this reader in beside the writer.
                reader = await aiosqlite.connect(_read_only_uri(path), uri=True)
                try:
                    reader.row_factory = aiosqlite.Row
                    store._reader = reader
                    yield store
                finally:
                    await reader.close()
            except sqlite3.DatabaseError as err:
                # A damaged page that the start (or the run) read: refused like a failed check.
                if type(err) is not sqlite3.DatabaseError or not is_damage(err):
                    raise
                msg = f"{path} is damaged ({err}); it was left untouched"
                raise StoreError(msg) from None
            if store.integrity is not None:
                await asyncio.to_thread(store.integrity.stopped_cleanly)
        finally:
            await db.close()

    async def _prepare_for_daemon(self, path: Path, rejected_max_bytes: int | None) -> None:
        """The start's integrity check, then the settings and migrations only the daemon
        applies; the whole-file check is left to check_integrity_forever."""
        await check_at_start(self._db, path)
        self.integrity = IntegrityWatch(path, await asyncio.to_thread(read_marker, path))
        await asyncio.to_thread(self.integrity.started)  # a crash from here on is unclean
        version = await self._check_version()  # before anything changes the file
        if version == 0:
            # A new database: pages freed by retention go back to the filesystem
            # (PRAGMA incremental_vacuum). Only possible before the first table exists; an
            # older database keeps auto_vacuum = NONE and reuses its free pages instead.
            await self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        await self._db.execute("PRAGMA journal_mode = WAL")
        # FULL until each transaction says otherwise (bridge/store/durability.py)
        await self._db.execute("PRAGMA synchronous = FULL")
        # After a checkpoint the WAL is cut back to this size: without a limit it keeps the
        # size of the biggest transaction ever written (a batch of 500 16 KiB rejects is 8 MB)
        # for good.
        await self._db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        # Every write runs in savepoints (one per call, one per ingest batch), and a savepoint
        # keeps the pages it changes in a sub-journal, which SQLite spills to a file in /var/tmp
        # past 64 KiB: measured, four times as many bytes as the WAL itself (4.0 MB against
        # 1.4 MB for 100 swipes). In memory it is bounded by what one transaction changes (a
        # batch: store.max_batch events). The daemon's queries sort nothing big on this
        # connection (they read through indexes), so temporary tables cannot grow here either.
        await self._db.execute("PRAGMA temp_store = MEMORY")
        await self._migrate(version)
        if rejected_max_bytes is not None:
            await self._write(set_rejected_cap, rejected_max_bytes)

    async def _check_current(self, path: Path) -> None:
        """A command works only on a database the daemon has brought to this release's schema."""
        try:
            version = await self._check_version()
        except aiosqlite.DatabaseError as err:
            msg = f"{path} is not a usable SQLite database ({err}); it was left untouched"
            raise StoreError(msg) from None
        if version < len(MIGRATIONS):
            msg = (
                f"{path} has schema {version}, this release expects {len(MIGRATIONS)}:"
                " start the daemon once to upgrade it"
            )
            raise StoreError(msg)

    async def watch_other_writers(self, *, interval: float = OTHER_WRITERS_POLL_SECONDS) -> None:
        """Wake every dispatcher when another process commits (a repair command: dead retry,
        replay, held release). SQLite's data_version of the daemon's own writing connection
        changes only on other connections' commits, and reading it costs no disk access.
        Nobody's commit leaves the WAL file as it was, so while its size and times stay the
        same (an idle site) most looks are one stat, without a round trip to the database
        thread. A stat can fall in the middle of another process's commit and see the file
        change before the commit does (a test caught it): every FULL_LOOK_EVERY-th look asks
        the database whatever the file says."""
        async with self._lock:
            last_repair = await last_repair_id(self._db)
            # Read now, not at the first look: a command that commits before then must count.
            [[seen_version]] = await fetch_all(self._db, "PRAGMA data_version")
        wal = None if self.integrity is None else wal_path(self.integrity.database)
        wal_seen: tuple[int, ...] | None = None
        looks = 0
        while True:
            await asyncio.sleep(interval)
            looks += 1
            if wal is not None:
                now_seen = _file_state(wal)
                if now_seen is not None and now_seen == wal_seen and looks % FULL_LOOK_EVERY:
                    continue
                wal_seen = now_seen
            async with self._lock:
                [[version]] = await fetch_all(self._db, "PRAGMA data_version")
                changed = version != seen_version
                repairs = await repairs_after(self._db, last_repair) if changed else []
            seen_version = version
            if changed:
                self.work.notify()
            for repair in repairs:  # in the daemon's log, beside what it does about them
                ids = json.loads(repair["deliveries"])
                log.info(
                    "repair.applied",
                    change=repair["change"],
                    by=repair["by_user"],
                    deliveries=len(ids),
                    ids=ids[:20],
                )
                last_repair = repair["id"]

    async def check_integrity_forever(self) -> None:
        """The daemon's whole-file check while it serves (bridge.store.integrity)."""
        if self.integrity is not None:
            await self.integrity.run_forever(self._refuse_writes)

    async def _refuse_writes(self) -> None:
        """The database failed its check: no write of this process reaches the file again
        (each fails as a StoreWriteError, so ingest acknowledges nothing)."""
        async with self._lock:
            await self._db.execute("PRAGMA query_only = ON")

    async def _check_version(self) -> int:
        rows = await fetch_all(self._db, "PRAGMA user_version")
        version = int(rows[0][0])
        if version > len(MIGRATIONS):
            msg = f"database schema {version} is newer than this release knows ({len(MIGRATIONS)})"
            raise StoreError(msg)
        return version

    async def _migrate(self, version: int) -> None:
        for number in range(version, len(MIGRATIONS)):
            await self._write(_apply_migration, number)

    async def _write(self, fn: Callable[..., T], *args: Any, durable: bool = True) -> T:
        """Run `fn(conn, *args)` in a transaction on the connection's thread, with plain
        sqlite3 inside; once committed, what it returned, or what it raised (an
        OperationalError as a StoreWriteError). `durable=False`: the commit may stay unflushed
        (a power cut, not a crash, can undo it): only for writes whose loss is a harmless
        resend (durability.py).

        Group commit (group_commit.py): calls made while a transaction is open or being
        committed share it, so one fsync serves many writes; each call runs in its own
        savepoint, so a failing call undoes only itself, and a cancelled caller cannot leave
        half a transaction behind: its call is still made.
        """
        answer = await self._writes.submit(_Call(fn, args, durable)).committed
        return cast("T", self._answer(answer))

    async def _write_now(self, fn: Callable[..., T], *args: Any) -> tuple[T, asyncio.Future[Any]]:
        """As `_write` (durable), but answer as soon as `fn` has run in the open transaction,
        with a future that resolves once that transaction is committed and flushed (and
        raises a StoreWriteError if it could not be)."""
        submitted = self._writes.submit(_Call(fn, args, durable=True, window=True))
        answer = self._answer(await submitted.ran)
        loop = asyncio.get_running_loop()
        committed: asyncio.Future[Any] = loop.create_future()

        def settle(done: asyncio.Future[Any]) -> None:
            if committed.done():
                return
            if done.cancelled():
                committed.cancel()
            elif isinstance(error := done.exception(), sqlite3.OperationalError):
                committed.set_exception(self._write_failed(error))
            elif error is not None:
                committed.set_exception(error)
            else:
                self._write_worked()
                committed.set_result(None)

        submitted.committed.add_done_callback(settle)
        return answer, committed

    def commit_soon(self) -> None:
        """Commit the open transaction now rather than at the end of its window: the caller
        holds as much unacknowledged as it may (store.max_batch messages)."""
        self._writes.commit_soon()

    def _answer(self, answer: Any) -> Any:
        if isinstance(answer, _Failed):
            if isinstance(answer.error, sqlite3.OperationalError):
                raise self._write_failed(answer.error) from answer.error
            raise answer.error
        self._write_worked()
        return answer

    # --- the group commit's three steps, each one round trip to the connection's thread ---

    async def _on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            # aiosqlite's own way of running a function on its thread, with the plain sqlite3
            # connection it owns. It has no public one; a thread of our own would need
            # check_same_thread=False and a second owner of the same connection.
            return cast(
                "T",
                await self._db._execute(  # type: ignore[no-untyped-call]  # noqa: SLF001
                    fn,
                    self._db._conn,  # noqa: SLF001 - see above: aiosqlite has no public way
                    *args,
                ),
            )
        except sqlite3.OperationalError as err:
            raise self._write_failed(err) from err

    async def _begin_transaction(self, calls: list[_Call], durable: bool) -> list[Any]:  # noqa: FBT001
        self._began = time.monotonic()
        self._synchronous = self._flushes.synchronous(durable=durable)
        return await self._on_thread(_begin, calls, self._synchronous)

    async def _run_in_transaction(self, calls: list[_Call]) -> list[Any]:
        return await self._on_thread(_run_calls, calls)

    async def _commit_transaction(self) -> None:
        await self._on_thread(_commit)
        self._flushes.committed(self._synchronous, began=self._began)

    @property
    def write_error(self) -> tuple[str, float] | None:
        """The current spell of failing writes: its first error and since when (epoch), or
        None. A spell ends once a write has worked after the last failure and no write has
        failed for WRITE_ERROR_HOLD_SECONDS, whether or not anything is written after that
        (an idle bridge writes nothing for minutes)."""
        if self._write_error is None:
            return None
        recovered = self._last_write_success > self._last_write_failure
        if recovered and time.monotonic() - self._last_write_failure >= WRITE_ERROR_HOLD_SECONDS:
            self._write_error = None
        return self._write_error

    def _write_failed(self, err: Exception) -> StoreWriteError:
        self._last_write_failure = time.monotonic()
        if self._write_error is None:
            self._write_error = (str(err), time.time())
        return StoreWriteError(str(err))

    def _write_worked(self) -> None:
        self._last_write_success = time.monotonic()
