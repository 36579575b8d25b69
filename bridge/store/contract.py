"""What the daemon asks of a store, whichever backend holds it: the SQLite file of one gateway
(bridge.store.Store) or PostgreSQL shared by several bridges (bridge.store.postgres).

Components are typed against this, so neither backend's extras leak into them; the contract
tests (tests/test_store_contract*.py) run the same behaviour against both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from bridge.delivery import DeliveryState, Job, Result
from bridge.store.admin import Moved
from bridge.store.integrity import IntegrityWatch
from bridge.store.queue import Claim
from bridge.store.records import (
    GroupResolver,
    Incoming,
    PersonResolver,
    QueueStatus,
    Rejection,
    Stored,
)
from bridge.store.retention import RetentionPolicy
from bridge.store.signal import WorkSignal


class DaemonStore(Protocol):
    work: WorkSignal
    # The SQLite file's own whole-file check (bridge.store.integrity); None where the database
    # server checks its pages itself (PostgreSQL).
    integrity: IntegrityWatch | None

    @property
    def write_error(self) -> tuple[str, float] | None: ...

    # --- ingest ---
    async def ingest(
        self,
        batch: Sequence[Incoming | Rejection],
        *,
        resolve: PersonResolver,
        received_at: datetime,
        group_of: GroupResolver | None = None,
    ) -> list[Stored]: ...

    async def ingest_now(
        self,
        batch: Sequence[Incoming | Rejection],
        *,
        resolve: PersonResolver,
        received_at: datetime,
        group_of: GroupResolver | None = None,
    ) -> tuple[list[Stored], Awaitable[None]]:
        """What became of each message as soon as that is decided, and what completes once it
        is durable (a StoreWriteError if it never is): the terminal hears at once, the
        broker's PUBACK waits for the second."""
        ...

    def commit_soon(self) -> None:
        """What is written but not committed yet (a window of store.commit_wait_seconds), is
        committed now."""
        ...

    async def release_unmapped(self, *, resolve: PersonResolver) -> int: ...

    # --- the queue ---
    async def recover_inflight(self) -> int: ...

    async def claim_batch(
        self,
        sink: str,
        *,
        limit: int,
        now: float,
        horizon: float = 86400.0,
        hold_late: bool = False,
        resend_harmless: bool = False,
    ) -> Claim: ...

    async def renew(self, jobs: Sequence[Job], *, now: float) -> int: ...

    async def unclaim(self, jobs: Sequence[Job]) -> None: ...

    async def settle(
        self, job: Job, result: Result, *, retry_at: float, now: float
    ) -> DeliveryState: ...

    async def expire(self, job: Job, *, now: float, max_age_days: float) -> bool: ...

    # --- what operators and the page read ---
    async def status(self, *, now: float) -> QueueStatus: ...

    async def recent_events(self, limit: int = 20) -> list[dict[str, object]]: ...

    async def recent_errors(self, limit: int = 10) -> list[dict[str, object]]: ...

    # --- background tasks ---
    async def watch_other_writers(self) -> None: ...

    async def retain_forever(self, policy: RetentionPolicy) -> None: ...

    async def check_integrity_forever(self) -> None: ...

    # --- the people directory's cache ---
    async def save_directory_source(
        self, source: str, rows: Iterable[Mapping[str, Any]], *, now: float
    ) -> bool: ...

    async def directory_source_failed(self, source: str, error: str, *, now: float) -> None: ...

    async def directory_revision(self) -> int: ...

    async def directory_records(
        self, sources: Sequence[str]
    ) -> dict[str, list[dict[str, Any]]]: ...

    async def directory_sync_state(self) -> list[dict[str, Any]]: ...

    # --- reconciliation ---
    async def sink_deliveries(
        self, sink: str, *, since: str, until: str
    ) -> list[dict[str, Any]]: ...

    async def accepted_events(self, *, since: str, until: str) -> list[dict[str, Any]]: ...

    async def replay(self, ids: Sequence[int], *, now: float) -> Moved: ...
