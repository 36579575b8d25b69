"""Retention on real SQLite files: old delivered history goes (archived first when asked), nothing
undelivered ever does, a pruned event's key still makes a resend a duplicate, rejected payloads
expire, free pages go back to the filesystem and the WAL is truncated."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.delivery import EventStatus, Job, Result
from bridge.events import Action, ClockEvent
from bridge.store import Incoming, Rejection, RetentionPolicy, Store, retention
from bridge.store.archive import read_day_file
from bridge.store.records import Identified
from tests.test_counters import assert_counters_agree
from tests.test_store import MORNING, opened, pragma, query, swipe

SINK, OTHER = "go2clock", "mctime"
TOPIC = "clockin/door-1/events"
DAY = 86400.0
POLICY = RetentionPolicy(retain_days=365, dedupe_days=60, rejected_retain_days=30)


def two_sinks(event: Identified) -> Mapping[str, str | None]:
    if event.badge == "UNKNOWN":
        return {SINK: None, OTHER: None}
    return {SINK: f"p-{event.badge}", OTHER: f"p-{event.badge}"}


async def put(store: Store, *events: ClockEvent, received: datetime | None = None) -> None:
    batch = [Incoming(event, TOPIC) for event in events]
    await store.ingest(batch, resolve=two_sinks, received_at=received or datetime.now(UTC))


async def take(store: Store, sink: str, key: str) -> Job:
    jobs = await store.claim(sink, limit=100, now=time.time())
    [job] = [job for job in jobs if job.event_key == key]
    await store.unclaim([other for other in jobs if other.event_key != key])
    return job


async def settle(store: Store, sink: str, key: str, result: Result, *, at: float) -> None:
    await store.settle(await take(store, sink, key), result, retry_at=at + 600, now=at)


def event_keys(path: Path) -> set[str]:
    return {row[0] for row in query(path, "SELECT key FROM events")}


async def one_of_each(store: Store, path: Path) -> None:
    """Events whose deliveries end in every state, each its own person so none waits on another.
    done*: prunable (every delivery delivered, duplicate or dropped); the rest must stay."""
    at = time.time()
    names = [
        "done-1",
        "done-2",
        "done-dup",
        "done-dropped",
        "half",
        "dead",
        "held",
        "pending",
        "inflight",
    ]
    await put(store, *(swipe(name, MORNING, badge=name) for name in names))
    await put(store, swipe("unmapped", MORNING, badge="UNKNOWN"))
    await put(store, swipe("double", MORNING + timedelta(seconds=5), badge="done-1"))  # layer 2
    for name in ("done-1", "done-2", "done-dup", "done-dropped", "half", "dead", "held"):
        for sink in (SINK, OTHER):
            if name == "half" and sink == OTHER:
                continue  # delivered to one sink, still pending at the other
            result = {
                "done-dup": Result.duplicate(),
                "done-dropped": Result.dead("refused"),
                "dead": Result.dead("refused"),
                "held": Result.held("no open shift"),
            }.get(name, Result.delivered())
            await settle(store, sink, name, result, at=at)
    dead = await store.ids_in("dead")
    dropped = [row[0] for row in query(path, _DELIVERY_OF, ("done-dropped",))]
    assert set(dropped) <= set(dead)
    await store.move(dropped, expect="dead", to="dropped", now=at)
    await take(store, SINK, "inflight")  # stays claimed


_DELIVERY_OF = (
    "SELECT d.id FROM deliveries AS d JOIN events AS e ON e.id = d.event_id WHERE key = ?"
)
KEPT = {"half", "dead", "held", "pending", "inflight", "unmapped"}
PRUNED = {"done-1", "done-2", "done-dup", "done-dropped", "double"}


async def test_pruning_keeps_every_undelivered_row_and_archives_the_rest(tmp_path: Path) -> None:
    path, archive = tmp_path / "bridge.db", tmp_path / "archive"
    async with opened(path) as store:
        await one_of_each(store, path)
        assert event_keys(path) == KEPT | PRUNED
        undelivered = query(
            path, "SELECT * FROM deliveries WHERE state NOT IN ('delivered', 'dropped')"
        )
        policy = RetentionPolicy(
            retain_days=365, dedupe_days=60, rejected_retain_days=30, archive_dir=archive
        )
        report = await store.prune(policy, now=time.time() + 366 * DAY)
        assert report.events == len(PRUNED)
        assert event_keys(path) == KEPT
        # every undelivered delivery untouched, column for column
        assert (
            query(path, "SELECT * FROM deliveries WHERE state NOT IN ('delivered', 'dropped')")
            == undelivered
        )
        await assert_counters_agree(store, path)

    [day_file] = sorted(archive.iterdir())
    assert day_file.name.startswith(f"{MORNING.date().isoformat()}.")
    assert day_file.stat().st_mode & 0o777 == 0o600
    archived = {event["key"]: event for event in read_day_file(day_file)}
    assert set(archived) == PRUNED
    outcomes = {
        key: sorted((d["sink"], d["state"], d["outcome"]) for d in event["deliveries"])
        for key, event in archived.items()
    }
    assert outcomes["done-1"] == [
        (SINK, "delivered", "delivered"),
        (OTHER, "delivered", "delivered"),
    ]
    assert outcomes["done-dup"] == [
        (SINK, "delivered", "duplicate"),
        (OTHER, "delivered", "duplicate"),
    ]
    assert outcomes["done-dropped"] == [(SINK, "dropped", None), (OTHER, "dropped", None)]
    assert outcomes["double"] == []  # a double swipe has no deliveries
    assert archived["double"]["status"] == "duplicate"
    assert archived["done-1"]["badge"] == "done-1"


async def test_recent_history_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    async with opened(path) as store:
        await one_of_each(store, path)
        report = await store.prune(POLICY, now=time.time() + 364 * DAY)
        assert (report.events, report.deleted) == (0, False)
        assert event_keys(path) == KEPT | PRUNED


async def test_a_resend_of_a_pruned_key_is_a_duplicate_until_dedupe_days(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    async with opened(path) as store:
        await one_of_each(store, path)
        later = time.time() + 366 * DAY
        await store.prune(POLICY, now=later)
        assert "done-1" not in event_keys(path)
        resend = [Incoming(swipe("done-1", MORNING, badge="done-1", action=None), TOPIC)]
        [stored] = await store.ingest(resend, resolve=two_sinks, received_at=datetime.now(UTC))
        assert (stored.status, stored.action) == (EventStatus.REDELIVERED, Action.IN)
        assert "done-1" not in event_keys(path)
        # dedupe_days after the pruning the key is forgotten
        report = await store.prune(POLICY, now=later + 61 * DAY)
        assert report.keys_expired == len(PRUNED)
        assert query(path, "SELECT COUNT(*) FROM kept_keys") == [(0,)]
        [stored] = await store.ingest(resend, resolve=two_sinks, received_at=datetime.now(UTC))
        assert stored.status is EventStatus.ACCEPTED


async def test_pruning_goes_in_batches_past_rows_that_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "BATCH", 7)
    path = tmp_path / "bridge.db"
    at = time.time()
    async with opened(path) as store:
        events = [swipe(f"e{n}", MORNING + timedelta(minutes=n), badge=f"B{n}") for n in range(40)]
        await put(store, *events)
        for n in range(40):
            outcome = Result.dead("refused") if n % 9 == 0 else Result.delivered()
            for sink in (SINK, OTHER):
                await settle(store, sink, f"e{n}", outcome, at=at)
        await put(store, swipe("new", MORNING + timedelta(days=1)), received=datetime.now(UTC))
        report = await store.prune(POLICY, now=at + 366 * DAY)
        dead = {f"e{n}" for n in range(0, 40, 9)}
        assert event_keys(path) == dead | {"new"}
        assert report.events == 40 - len(dead)
        await assert_counters_agree(store, path)


async def test_only_old_settlements_count(tmp_path: Path) -> None:
    """An event received long ago but delivered recently (it waited in an outage, or was
    replayed) stays until its delivery is itself older than the cutoff."""
    path = tmp_path / "bridge.db"
    now = time.time()
    long_ago = datetime.now(UTC) - timedelta(days=400)
    async with opened(path) as store:
        await put(store, swipe("late", MORNING, badge="L"), received=long_ago)
        for sink in (SINK, OTHER):
            await settle(store, sink, "late", Result.delivered(), at=now - 10 * DAY)
        assert (await store.prune(POLICY, now=now)).events == 0
        assert (await store.prune(POLICY, now=now + 356 * DAY)).events == 1


async def test_rejected_payloads_expire_and_the_budget_follows(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    now = datetime.now(UTC)
    async with opened(path) as store:
        batch = [
            Rejection(
                topic=TOPIC, format="json", payload=b"x" * 100, reason="bad", received_at=when
            )
            for when in (
                now - timedelta(days=40),
                now - timedelta(days=31),
                now - timedelta(days=2),
            )
        ]
        await store.ingest(batch, resolve=two_sinks, received_at=now)
        before = (await store.status(now=time.time()))["rejected_bytes"]
        report = await store.prune(POLICY, now=time.time())
        assert report.rejected == 2
        status = await store.status(now=time.time())
        assert status["rejected"] == 1
        [[footprint]] = query(path, "SELECT footprint FROM rejected")
        assert status["rejected_bytes"] == footprint < before
        assert query(path, "SELECT stored_bytes FROM rejected_budget") == [(footprint,)]
        assert status["rejected_pruned"] == 0  # the cap's count: none was lost to the cap
        await assert_counters_agree(store, path)


async def test_free_pages_go_back_and_the_wal_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    at = time.time()
    async with opened(path) as store:
        assert await pragma(store, "auto_vacuum") == 2
        events = [
            swipe(f"e{n}", MORNING + timedelta(minutes=n), badge=f"B{n}", note="x" * 2000)
            for n in range(300)
        ]
        await put(store, *events)
        jobs = [
            job for sink in (SINK, OTHER) for job in await store.claim(sink, limit=500, now=at + 60)
        ]
        for job in jobs:
            await store.settle(job, Result.delivered(), retry_at=at, now=at)
        await store.return_free_pages()  # a checkpoint: the size the rows take
        full = path.stat().st_size
        report = await store.prune(POLICY, now=at + 366 * DAY)
        assert report.events == 300
        assert report.pages_freed > 0
        assert path.stat().st_size < full / 2
        assert Path(f"{path}-wal").stat().st_size == 0
        assert await pragma(store, "freelist_count") == 0


async def test_quiet_means_no_ingest_and_nothing_due(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    async with opened(path) as store:
        assert await store.is_quiet(0.05)
        await put(store, swipe("a", MORNING))
        assert not await store.is_quiet(0.05)  # just ingested
        await asyncio.sleep(0.06)
        assert not await store.is_quiet(0.05)  # its deliveries are due
        for sink in (SINK, OTHER):
            await settle(store, sink, "a", Result.delivered(), at=time.time())
        assert await store.is_quiet(0.05)


async def test_the_daemon_task_prunes_when_quiet(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    long_ago = time.time() - 400 * DAY
    async with opened(path) as store:
        await put(store, swipe("old", MORNING), received=datetime.fromtimestamp(long_ago, UTC))
        for sink in (SINK, OTHER):
            await settle(store, sink, "old", Result.delivered(), at=long_ago)
        task = asyncio.create_task(
            store.retain_forever(POLICY, quiet_seconds=0.01, check_seconds=0.02)
        )
        try:
            for _ in range(200):
                if not event_keys(path):
                    break
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert event_keys(path) == set()
        assert query(path, "SELECT key FROM kept_keys") == [("old",)]


def test_an_archive_failure_deletes_nothing(tmp_path: Path) -> None:
    """The archive is written before the delete, in the same transaction: if it cannot be
    written the batch fails and every row stays."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")

    async def run() -> None:
        path = tmp_path / "bridge.db"
        async with opened(path) as store:
            await one_of_each(store, path)
            policy = RetentionPolicy(
                retain_days=365, dedupe_days=60, rejected_retain_days=30, archive_dir=blocked
            )
            with pytest.raises(OSError):  # noqa: PT011 - whichever the filesystem says
                await store.prune(policy, now=time.time() + 366 * DAY)
            assert event_keys(path) == KEPT | PRUNED
            assert query(path, "SELECT COUNT(*) FROM kept_keys") == [(0,)]

    asyncio.run(run())


def test_the_database_is_consistent_after_pruning(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"

    async def run() -> None:
        async with opened(path) as store:
            await one_of_each(store, path)
            await store.prune(POLICY, now=time.time() + 366 * DAY)

    asyncio.run(run())
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        orphans = db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE event_id NOT IN (SELECT id FROM events)"
        ).fetchone()
        assert orphans == (0,)
