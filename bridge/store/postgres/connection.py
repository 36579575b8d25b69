"""The PostgreSQL store's connection: a psycopg 3 async pool, migrations, one transaction helper.

`prepare_threshold=None` keeps psycopg from preparing statements, so the store works behind a
transaction-pooling PgBouncer; for the same reason it takes only transaction-level advisory locks
(`pg_advisory_xact_lock`), never session ones, and does not LISTEN.

Several bridges share one database: each is an *instance* with its own id, and what it claims
carries that id and a lease (bridge.store.postgres.queue).
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Concatenate, ParamSpec, Self, TypeVar
from zoneinfo import ZoneInfo

import psycopg
from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from bridge.store.inference import InferenceRules
from bridge.store.integrity import IntegrityWatch
from bridge.store.postgres.schema import MIGRATIONS
from bridge.store.records import StoreError, StoreWriteError
from bridge.store.signal import WorkSignal

# Any constant: the key of the transaction-level advisory lock that serialises migrations.
_MIGRATION_LOCK = 0x636C6F636B696E  # "clockin"
# A claim that lost a race for a person to another instance's claim (the unique in-flight
# index refused it) is simply tried again, this many times.
CONFLICT_RETRIES = 3

Connection = psycopg.AsyncConnection[Any]
P = ParamSpec("P")
R = TypeVar("R")


def default_instance_id() -> str:
    """Host name and a short random part: unique per running bridge, readable in `status`."""
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


class PostgresBase:
    def __init__(
        self,
        pool: AsyncConnectionPool[Connection],
        *,
        site_tz: ZoneInfo,
        window_seconds: float,
        inference: InferenceRules | None,
        settle_seconds: float,
        instance: str,
        lease_seconds: float,
    ) -> None:
        self._pool = pool
        self._site_tz = site_tz
        self._window = window_seconds
        self._inference = inference or InferenceRules(tz=site_tz, window_seconds=window_seconds)
        self._settle_seconds = settle_seconds
        self.instance = instance
        self.lease_seconds = lease_seconds
        # Set after this instance's commits that may make deliveries due. Another instance's
        # work is found by its own pumps, or by this one's periodic look (no LISTEN: PgBouncer).
        self.work = WorkSignal()
        self.last_ingest = 0.0
        self._write_error: tuple[str, float] | None = None  # a spell of failing writes
        self.integrity: IntegrityWatch | None = None  # PostgreSQL checks its own pages

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        url: str,
        *,
        site_tz: ZoneInfo,
        window_seconds: float = 60.0,
        inference: InferenceRules | None = None,
        settle_seconds: float = 0.0,
        instance: str | None = None,
        lease_seconds: float = 30.0,
        pool_size: int = 4,
        password: str | None = None,
        migrate: bool = True,
    ) -> AsyncIterator[Self]:
        """The database at `url` (postgresql://..., without the password: `password`),
        migrated (`migrate`; a command only checks the schema is current); `instance`: this
        bridge's id on it (default: host name and a random part)."""
        options: dict[str, Any] = {"prepare_threshold": None, "autocommit": True}
        if password is not None:
            options["password"] = password
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url, min_size=1, max_size=pool_size, kwargs=options, open=False
        )
        try:
            await pool.open(wait=True, timeout=10)
        except psycopg.OperationalError as err:
            msg = f"cannot connect to the PostgreSQL store: {_without_secrets(err)}"
            raise StoreError(msg) from None
        try:
            store = cls(
                pool,
                site_tz=site_tz,
                window_seconds=window_seconds,
                inference=inference,
                settle_seconds=settle_seconds,
                instance=instance or default_instance_id(),
                lease_seconds=lease_seconds,
            )
            await (store._migrate() if migrate else store._check_current())
            yield store
        finally:
            await pool.close()

    async def _migrate(self) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (applied INTEGER)")
            row = await (await conn.execute("SELECT applied FROM schema_version")).fetchone()
            if row is None:
                await conn.execute("INSERT INTO schema_version VALUES (0)")
            applied = 0 if row is None else int(row[0])
            if applied > len(MIGRATIONS):
                msg = (
                    f"the PostgreSQL store has schema {applied}; this version knows"
                    f" {len(MIGRATIONS)} (a newer bridge wrote it)"
                )
                raise StoreError(msg)
            for number in range(applied, len(MIGRATIONS)):
                await conn.execute(MIGRATIONS[number])
                await conn.execute("UPDATE schema_version SET applied = %s", (number + 1,))

    async def _check_current(self) -> None:
        """A command's check: the daemon has created and migrated this database."""
        async with self._reading() as conn:
            exists = await (
                await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
            ).fetchone()
            row = None
            if exists is not None and exists[0]:
                row = await (await conn.execute("SELECT applied FROM schema_version")).fetchone()
        applied = 0 if row is None else int(row[0])
        if applied != len(MIGRATIONS):
            msg = (
                f"the PostgreSQL store has schema {applied}, this release expects"
                f" {len(MIGRATIONS)}: start a bridge once to create or upgrade it"
            )
            raise StoreError(msg)

    async def _transaction(
        self,
        body: Callable[Concatenate[Connection, P], Awaitable[R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """`body(conn, ...)` inside one transaction; a lost race for a person's in-flight slot
        (another instance won it) is tried again, a database that fails is StoreWriteError."""
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    answer = await body(conn, *args, **kwargs)
            except (errors.UniqueViolation, errors.DeadlockDetected):
                if attempt == CONFLICT_RETRIES:
                    raise
            except psycopg.OperationalError as err:
                message = _without_secrets(err)
                if self._write_error is None:
                    self._write_error = (message, time.time())
                raise StoreWriteError(message) from None
            else:
                self._write_error = None
                return answer
        raise AssertionError  # unreachable: the last attempt returns or raises

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[Connection]:
        """A pooled connection for reads outside a transaction of ours; the database failing
        (unreachable, restarting) is StoreWriteError, as for writes, and starts a spell."""
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as err:
            message = _without_secrets(err)
            if self._write_error is None:
                self._write_error = (message, time.time())
            raise StoreWriteError(message) from None

    async def check_integrity_forever(self) -> None:
        """Nothing to do: the server checks its own pages (data checksums, WAL replay); a
        database it cannot read is an error on the next transaction, and readiness says so."""

    @property
    def write_error(self) -> tuple[str, float] | None:
        """The current spell of failing transactions (the database unreachable, a failover):
        its first error and since when, or None once one works again."""
        return self._write_error


async def execute(conn: Connection, sql: str, params: Sequence[object]) -> int:
    """One statement inside a transaction body; how many rows it changed."""
    return int((await conn.execute(sql, params)).rowcount)


def _without_secrets(err: Exception) -> str:
    """psycopg's message, which names host, port and user but never the password."""
    return str(err).splitlines()[0][:300] if str(err) else type(err).__name__
