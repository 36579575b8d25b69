"""Storage contract of the durable queue, on real SQLite files and without a broker.

Events are built directly as ClockEvents and go through the public Store API. What the store
wrote is read back through a separate sqlite3 connection (WAL lets a reader in beside the
store's own connection), so the assertions see what a crash would leave on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.delivery import Job, Result
from bridge.events import Action, ClockEvent
from bridge.store import (
    Incoming,
    PersonResolver,
    Rejection,
    Store,
    Stored,
    StoreError,
    StoreWriteError,
)
from bridge.store.backup import backup
from bridge.store.schema import MIGRATIONS

BERLIN = ZoneInfo("Europe/Berlin")
SINK = "go2clock"
WINDOW = 60
# A Monday in winter (Berlin is UTC+1): 08:00 local is 07:00 UTC.
MORNING = datetime(2026, 11, 23, 8, 0, tzinfo=BERLIN).astimezone(UTC)


# --- helpers -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def opened(path: Path) -> AsyncIterator[Store]:
    async with Store.open(path, site_tz=BERLIN, window_seconds=WINDOW) as store:
        yield store


def swipe(
    key: str,
    at: datetime,
    *,
    badge: str = "B1",
    action: Action | None = Action.IN,
    note: str | None = None,
) -> ClockEvent:
    return ClockEvent(
        key=key,
        terminal="door-1",
        badge=badge,
        user=None,
        action=action,
        time=at.astimezone(UTC),
        time_given=True,
        note=note,
    )


def people(known: Mapping[str, str | None]) -> PersonResolver:
    """A resolver for the one sink: badge -> person id, None for a badge it does not know."""

    def resolve(event: ClockEvent) -> Mapping[str, str | None]:
        return {SINK: known.get(event.badge or "")}

    return resolve


def everyone(event: ClockEvent) -> Mapping[str, str | None]:
    """Every badge is a known person, named after the badge."""
    return {SINK: f"p-{event.badge}"}


async def ingest(
    store: Store, *events: ClockEvent | Rejection, resolve: PersonResolver = everyone
) -> list[Stored]:
    batch = [
        e if isinstance(e, Rejection) else Incoming(e, "clockin/door-1/events") for e in events
    ]
    return await store.ingest(batch, resolve=resolve, received_at=datetime.now(UTC))


async def claim(store: Store, *, limit: int = 100, now: float | None = None) -> list[Job]:
    return await store.claim(SINK, limit=limit, now=time.time() if now is None else now)


async def settle(store: Store, job: Job, result: Result, *, retry_at: float = 0.0) -> str:
    return await store.settle(job, result, retry_at=retry_at, now=time.time())


def query(path: Path, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql, tuple(params)).fetchall()


def delivery(path: Path, event_key: str) -> dict[str, Any]:
    """The one delivery row of an event, as a dict."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT d.* FROM deliveries AS d JOIN events AS e ON e.id = d.event_id"
            " WHERE e.key = ? AND d.sink = ?",
            (event_key, SINK),
        ).fetchall()
    assert len(rows) == 1, f"{event_key}: {len(rows)} deliveries"
    return dict(rows[0])


def event_status(path: Path, key: str) -> str:
    return query(path, "SELECT status FROM events WHERE key = ?", (key,))[0][0]


def keys(jobs: Iterable[Job]) -> list[str]:
    return [job.event_key for job in jobs]


async def pragma(store: Store, name: str) -> Any:
    # synchronous and busy_timeout are per connection: only the store's own one can tell.
    rows = await store._db.execute_fetchall(f"PRAGMA {name}")
    return rows[0][0]


async def make_database(path: Path, rows: int) -> None:
    async with opened(path) as store:
        events = [
            swipe(f"e{n}", MORNING + timedelta(minutes=n), badge=f"B{n % 50}", note="x" * 200)
            for n in range(rows)
        ]
        await ingest(store, *events)


# --- opening, pragmas, migrations ----------------------------------------------------------


async def test_pragmas_in_force_after_open(tmp_path: Path) -> None:
    async with opened(tmp_path / "q.db") as store:
        assert str(await pragma(store, "journal_mode")).lower() == "wal"
        assert await pragma(store, "synchronous") == 2  # FULL
        assert await pragma(store, "user_version") == len(MIGRATIONS)
        assert await pragma(store, "busy_timeout") > 0


async def test_open_creates_missing_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "q.db"
    async with opened(path):
        pass
    assert query(path, "PRAGMA user_version") == [(len(MIGRATIONS),)]


async def test_reopening_applies_nothing_twice_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with opened(path) as store:
        await ingest(store, swipe("k1", MORNING))
    schema = query(path, "SELECT name, sql FROM sqlite_master ORDER BY name")
    for _ in range(2):
        async with opened(path) as store:
            assert await pragma(store, "user_version") == len(MIGRATIONS)
    assert query(path, "SELECT name, sql FROM sqlite_master ORDER BY name") == schema
    assert query(path, "SELECT key FROM events") == [("k1",)]
    assert delivery(path, "k1")["state"] == "pending"


async def test_an_older_database_is_upgraded_in_place(tmp_path: Path) -> None:
    """A database written by the release with only migration 1 gets migration 2 and no more."""
    path = tmp_path / "q.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(MIGRATIONS[0])
        db.execute(
            "INSERT INTO events (key, terminal, subject, action, action_inferred, event_time,"
            " local_day, time_given, received_at, status, topic) VALUES ('old', 'door-1',"
            " 'badge:B1', 'in', 0, '2026-01-01T07:00:00.000000Z', '2026-01-01', 1,"
            " '2026-01-01T07:00:00.000000Z', 'accepted', 't')"
        )
        db.execute("PRAGMA user_version = 1")
        db.commit()
    async with opened(path) as store:
        assert await pragma(store, "user_version") == len(MIGRATIONS)
    assert query(path, "SELECT key FROM events") == [("old",)]
    assert query(path, "SELECT name FROM sqlite_master WHERE name = 'person_state'")


async def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with opened(path) as store:
        await ingest(store, swipe("k1", MORNING))
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
        db.commit()
    with pytest.raises(StoreError, match="newer"):
        async with opened(path):
            pytest.fail("a newer schema must not be opened")
    assert query(path, "PRAGMA user_version") == [(len(MIGRATIONS) + 1,)]
    assert query(path, "SELECT key FROM events") == [("k1",)]


async def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    original = random.Random(7).randbytes(64 * 1024)
    path.write_bytes(original)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        async with opened(path):
            pytest.fail("random bytes must not open as a queue")
    assert path.read_bytes() == original


async def test_a_corrupted_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    await make_database(path, rows=3000)
    page_size = query(path, "PRAGMA page_size")[0][0]
    data = bytearray(path.read_bytes())
    pages = len(data) // page_size
    assert pages > 20, "the database should span many pages"
    noise = random.Random(11)
    for page in range(pages // 2, pages // 2 + 4):  # whole pages in the middle of the file
        data[page * page_size : (page + 1) * page_size] = noise.randbytes(page_size)
    corrupted = bytes(data)
    path.write_bytes(corrupted)
    # History pages: a start no longer reads the whole file (bridge.store.integrity), so the
    # store opens; its whole-file check finds the damage and every write is then refused.
    async with opened(path) as store:
        assert store.integrity is not None
        await asyncio.wait_for(store.check_integrity_forever(), timeout=30)
        assert store.integrity.damage is not None
        with pytest.raises(StoreWriteError):
            await ingest(store, swipe("after", MORNING))
    assert path.read_bytes() == corrupted
    with pytest.raises(StoreError, match="is damaged: its copy fails the integrity check"):
        backup(path, tmp_path / "copy.db")  # and so does the operator's backup


# --- duplicates ----------------------------------------------------------------------------


async def test_layer1_same_key_twice_is_one_event(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with opened(path) as store:
        first = await ingest(store, swipe("k1", MORNING))
        again = await ingest(store, swipe("k1", MORNING))
        # also within one batch (group commit): the second sees the first's uncommitted row
        batch = await ingest(
            store,
            swipe("k2", MORNING + timedelta(hours=1), action=Action.OUT),
            swipe("k2", MORNING + timedelta(hours=1), action=Action.OUT),
        )
    assert [s.status for s in first] == ["accepted"]
    assert [(s.key, s.status, s.action) for s in again] == [("k1", "redelivered", Action.IN)]
    assert [s.status for s in batch] == ["accepted", "redelivered"]
    assert query(path, "SELECT key, COUNT(*) FROM events GROUP BY key") == [("k1", 1), ("k2", 1)]
    assert query(path, "SELECT COUNT(*) FROM deliveries") == [(2,)]


@pytest.mark.parametrize(
    ("first", "second", "gap", "expected"),
    [
        (Action.IN, Action.IN, 10, "duplicate"),
        (Action.IN, Action.IN, WINDOW, "duplicate"),  # the window's edge still counts
        (Action.IN, Action.IN, WINDOW + 1, "accepted"),
        (Action.IN, Action.OUT, 10, "accepted"),
        (Action.BREAK_START, Action.BREAK_START, 30, "duplicate"),
        (Action.IN, Action.IN, -10, "duplicate"),  # arrived late: 10 s before the first
        (Action.IN, Action.IN, -WINDOW - 1, "accepted"),
    ],
)
async def test_layer2_double_swipe(
    tmp_path: Path, first: Action, second: Action, gap: int, expected: str
) -> None:
    path = tmp_path / "q.db"
    async with opened(path) as store:
        await ingest(store, swipe("a", MORNING, action=first))
        [stored] = await ingest(store, swipe("b", MORNING + timedelta(seconds=gap), action=second))
    assert stored.status == expected
    wanted_deliveries = 0 if expected == "duplicate" else 1
    assert query(
        path,
        "SELECT COUNT(*) FROM deliveries AS d JOIN events AS e ON e.id = d.event_id"
        " WHERE e.key = 'b'",
    ) == [(wanted_deliveries,)]
    if expected == "duplicate":
        assert stored.reason == "double swipe"
        assert query(path, "SELECT duplicate_of FROM events WHERE key = 'b'") == query(
            path, "SELECT id FROM events WHERE key = 'a'"
        )


async def test_first_swipe_of_a_local_day_is_in(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with opened(path) as store:
        [stored] = await ingest(store, swipe("a", MORNING, action=None))
    assert (stored.action, stored.status) == (Action.IN, "accepted")
    assert query(path, "SELECT action, action_inferred, local_day FROM events") == [
        ("in", 1, "2026-11-23")
    ]


async def test_the_local_day_does_not_decide_direction(tmp_path: Path) -> None:
    """23:30 and 00:30 Berlin are two local days but one shift: the second swipe is `out`
    (it was `in` while direction restarted at local midnight)."""
    evening = datetime(2026, 11, 23, 23, 30, tzinfo=BERLIN)
    after_midnight = datetime(2026, 11, 24, 0, 30, tzinfo=BERLIN)
    path = tmp_path / "q.db"
    async with opened(path) as store:
        await ingest(store, swipe("a", evening, action=Action.IN))
        [stored] = await ingest(store, swipe("b", after_midnight, action=None))
    assert (stored.action, stored.status) == (Action.OUT, "accepted")
    # local_day is still recorded (other views use it)
    assert query(path, "SELECT local_day FROM events ORDER BY id") == [
        ("2026-11-23",),
        ("2026-11-24",),
    ]


async def test_inference_counts_earlier_events_of_the_same_batch(tmp_path: Path) -> None:
    """Two night shifts in one ingest batch: in, out, in, out."""
    path = tmp_path / "q.db"
    night = datetime(2026, 11, 23, 22, 0, tzinfo=BERLIN)
    hours = (0, 8, 24, 32)
    batch = [swipe(f"n{h}", night + timedelta(hours=h), action=None) for h in hours]
    async with opened(path) as store:
        stored = await ingest(store, *batch)
    assert [item.action for item in stored] == [Action.IN, Action.OUT, Action.IN, Action.OUT]
    assert query(path, "SELECT action_inferred FROM events") == [(1,)] * 4


# --- unmapped badges and rejections --------------------------------------------------------


async def test_unmapped_then_released(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with opened(path) as store:
        stored = await ingest(
            store,
            swipe("a", MORNING, badge="NEW"),
            swipe("b", MORNING, badge="OLD"),
            resolve=people({"OLD": "p-old"}),
        )
        assert [s.status for s in stored] == ["unmapped", "accepted"]
        assert delivery(path, "a")["state"] == "unmapped"
        assert delivery(path, "a")["person"] is None
        assert event_status(path, "a") == "unmapped"
        assert keys(await claim(store)) == ["b"]

        assert await store.release_unmapped(resolve=people({"OLD": "p-old"})) == 0
        assert delivery(path, "a")["state"] == "unmapped"

        released = await store.release_unmapped(resolve=people({"NEW": "p-new", "OLD": "p-old"}))
        assert released == 1
        assert (delivery(path, "a")["state"], delivery(path, "a")["person"]) == ("pending", "p-new")
        assert event_status(path, "a") == "accepted"
        assert keys(await claim(store)) == ["a"]
        assert await store.release_unmapped(resolve=everyone) == 0


async def test_rejections_are_kept_whole(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    payload = b'{"badge": \xff\x00 not json'
    received = datetime(2026, 11, 23, 7, 0, 1, tzinfo=UTC)
    async with opened(path) as store:
        [stored] = await ingest(
            store, Rejection("clockin/door-9/events", "tasmota", payload, "not UTF-8", received)
        )
    assert (stored.status, stored.reason) == ("rejected", "not UTF-8")
    assert query(
        path, "SELECT topic, format, payload, payload_size, reason, received_at FROM rejected"
    ) == [
        (
            "clockin/door-9/events",
            "tasmota",
            payload,
            len(payload),
            "not UTF-8",
            "2026-11-23T07:00:01.000000Z",
        )
    ]
    assert query(path, "SELECT COUNT(*) FROM events") == [(0,)]


# --- claiming ------------------------------------------------------------------------------


async def test_attempts_are_counted_at_claim(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with opened(path) as store:
        await ingest(store, swipe("a", MORNING))
        assert delivery(path, "a")["attempts"] == 0
        [job] = await claim(store)
        assert job.attempt == 1
        assert (delivery(path, "a")["state"], delivery(path, "a")["attempts"]) == ("inflight", 1)
        now = time.time()
        await store.settle(job, Result.retry("HTTP 503"), retry_at=now, now=now)
        [again] = await claim(store, now=now + 1)
        assert again.attempt == 2
        assert delivery(path, "a")["attempts"] == 2


async def test_job_carries_the_event(tmp_path: Path) -> None:
    async with opened(tmp_path / "q.db") as store:
        await ingest(store, swipe("a", MORNING, action=Action.BREAK_START, note="dentist"))
        [job] = await claim(store)
    assert (job.event_key, job.sink, job.person, job.action, job.time, job.terminal) == (
        "a",
        SINK,
        "p-B1",
        Action.BREAK_START,
        MORNING,
        "door-1",
    )
    assert (job.note, job.state) == ("dentist", {})


async def test_a_retrying_delivery_blocks_the_persons_later_ones(tmp_path: Path) -> None:
    async with opened(tmp_path / "q.db") as store:
        await ingest(
            store,
            swipe("a", MORNING, action=Action.IN),
            swipe("b", MORNING + timedelta(hours=8), action=Action.OUT),
            swipe("other", MORNING, badge="B2"),
        )
        first = await claim(store)
        assert sorted(keys(first)) == ["a", "other"]
        now = time.time()
        job_a = next(job for job in first if job.event_key == "a")
        await store.settle(job_a, Result.retry("HTTP 503"), retry_at=now + 1000, now=now)
        for later in (now + 10, now + 999):
            assert await claim(store, now=later) == [], "b must wait behind the retrying a"
        assert keys(await claim(store, now=now + 1000)) == ["a"]


# --- settling ------------------------------------------------------------------------------


async def settled_one(path: Path, result: Result, *, retry_at: float = 0.0) -> tuple[str, dict]:
    """Ingest one event, claim it, settle it with `result`: the state returned and its row."""
    async with opened(path) as store:
        await ingest(store, swipe("a", MORNING))
        [job] = await claim(store)
        returned = await settle(store, job, result, retry_at=retry_at)
    return returned, delivery(path, "a")


@pytest.mark.parametrize("result", [Result.delivered("ok"), Result.duplicate("already there")])
async def test_settle_delivered(tmp_path: Path, result: Result) -> None:
    returned, row = await settled_one(tmp_path / "q.db", result)
    assert returned == "delivered"
    assert (row["state"], row["outcome"], row["last_error"]) == (
        "delivered",
        result.outcome.value,
        None,
    )
    assert row["settled_at"] is not None


async def test_settle_retry(tmp_path: Path) -> None:
    retry_at = time.time() + 123.5
    returned, row = await settled_one(
        tmp_path / "q.db", Result.retry("HTTP 502"), retry_at=retry_at
    )
    assert returned == "pending"
    assert (row["state"], row["next_attempt_at"], row["last_error"], row["attempts"]) == (
        "pending",
        retry_at,
        "HTTP 502",
        1,
    )


async def test_settle_dead(tmp_path: Path) -> None:
    returned, row = await settled_one(tmp_path / "q.db", Result.dead("HTTP 400 bad badge"))
    assert returned == "dead"
    assert (row["state"], row["last_error"]) == ("dead", "HTTP 400 bad badge")


async def test_settle_paused_gives_the_attempt_back(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with opened(path) as store:
        await ingest(store, swipe("a", MORNING))
        [job] = await claim(store)
        now = time.time()
        state = await store.settle(job, Result.paused("HTTP 401"), retry_at=now + 500, now=now)
        row = delivery(path, "a")
        assert (state, row["state"], row["attempts"], row["next_attempt_at"]) == (
            "pending",
            "pending",
            0,
            now,
        )
        [again] = await claim(store, now=now)  # due at once: first in line when resumed
        assert again.attempt == 1


# --- crash recovery and expiry -------------------------------------------------------------


async def test_recover_inflight_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with opened(path) as store:
        await ingest(store, swipe("a", MORNING), swipe("b", MORNING, badge="B2"))
        assert len(await claim(store)) == 2
        # the process dies here: nothing is settled
    assert {row[0] for row in query(path, "SELECT state FROM deliveries")} == {"inflight"}
    async with opened(path) as store:
        assert await claim(store) == [], "inflight work is not claimed before recovery"
        assert await store.recover_inflight() == 2
        again = await claim(store)
    assert sorted(keys(again)) == ["a", "b"]
    assert {job.attempt for job in again} == {2}, "the crashed attempt is used up"


# --- status ---------------------------------------------------------------------------------


async def test_status_counts(tmp_path: Path) -> None:
    async with opened(tmp_path / "q.db") as store:
        before = time.time()
        await ingest(
            store,
            *[swipe(f"k{n}", MORNING, badge=f"B{n}") for n in range(6)],
            swipe("lost", MORNING, badge="NOBODY"),
            swipe("k0-again", MORNING + timedelta(seconds=5), badge="B0"),  # double swipe
            Rejection("clockin/x/events", "canonical", b"[]", "not an object", datetime.now(UTC)),
            resolve=lambda e: {SINK: None if e.badge == "NOBODY" else f"p-{e.badge}"},
        )
        after = time.time()
        jobs = await claim(store, limit=6)
        await settle(store, jobs[0], Result.delivered())
        await settle(store, jobs[1], Result.duplicate())
        await settle(store, jobs[2], Result.dead("400"))
        now = time.time()
        await store.settle(jobs[3], Result.retry("503"), retry_at=now, now=now)
        await store.settle(jobs[4], Result.retry("503"), retry_at=now + 1000, now=now)
        assert keys(await claim(store, now=now + 1)) == [jobs[3].event_key]  # retried
        # jobs[5] stays inflight
        status = await store.status(now=after + 100)
    sink = status["sinks"][SINK]
    assert sink["states"] == {"delivered": 2, "dead": 1, "inflight": 2, "pending": 1, "unmapped": 1}
    assert 100 <= sink["oldest_pending_seconds"] <= 100 + (after - before) + 0.01
    assert status["events"] == {"accepted": 6, "unmapped": 1, "duplicate": 1}
    assert (status["rejected"], status["retried"]) == (1, 1)


async def test_status_of_an_empty_store(tmp_path: Path) -> None:
    async with opened(tmp_path / "q.db") as store:
        assert await store.status(now=time.time()) == {
            "events": {},
            "rejected": 0,
            "rejected_bytes": 0,
            "rejected_max_bytes": 64 * 1024 * 1024,
            "rejected_pruned": 0,
            "retried": 0,
            "inferred": 0,
            "sinks": {},
        }


# --- concurrency ----------------------------------------------------------------------------


async def test_concurrent_ingest_claim_settle_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    per_producer, batch = 120, 6
    delivered: list[str] = []

    async def produce(name: str) -> None:
        for start in range(0, per_producer, batch):
            events = [
                swipe(
                    f"{name}-{n}",
                    MORNING + timedelta(minutes=n),
                    badge=f"{name}{n % 7}",
                    action=Action.IN if n % 2 else Action.OUT,
                )
                for n in range(start, start + batch)
            ]
            await ingest(store, *events)
            await asyncio.sleep(0)

    async def dispatch(rng: random.Random) -> None:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 0.5:
            jobs = await claim(store, limit=rng.randint(1, 8))
            if jobs:
                idle_since = time.monotonic()
            for job in jobs:
                if rng.random() < 0.3:
                    await settle(store, job, Result.retry("503"), retry_at=time.time())
                else:
                    await settle(store, job, Result.delivered())
                    delivered.append(job.event_key)
            await asyncio.sleep(0)

    async with opened(path) as store, asyncio.TaskGroup() as tg:
        tg.create_task(produce("P"))
        tg.create_task(produce("Q"))
        tg.create_task(dispatch(random.Random(1)))
        tg.create_task(dispatch(random.Random(2)))
    expected = {f"{name}-{n}" for name in "PQ" for n in range(per_producer)}
    assert len(delivered) == len(set(delivered)), "a delivery was sent twice"
    assert set(delivered) == expected
    assert query(path, "SELECT COUNT(*) FROM events") == [(len(expected),)]
    assert query(path, "SELECT state, COUNT(*) FROM deliveries GROUP BY state") == [
        ("delivered", len(expected))
    ]


async def test_a_cancelled_write_leaves_the_store_usable(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with opened(path) as store:
        await ingest(store, swipe("a", MORNING))
        task = asyncio.create_task(claim(store))
        await asyncio.sleep(0)  # the task now waits for BEGIN IMMEDIATE on the db thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await ingest(store, swipe("b", MORNING, badge="B2"))
        assert sorted(keys(await claim(store))) == ["a", "b"]


# --- property: per-person order under retries -----------------------------------------------

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "50"))

punches = st.lists(
    st.tuples(
        st.sampled_from(["B1", "B2", "B3"]),
        st.integers(min_value=0, max_value=12 * 60),  # minutes after MORNING
        st.sampled_from([*Action, None]),
    ),
    min_size=1,
    max_size=25,
)
plans = st.lists(
    st.tuples(st.integers(1, 4), st.booleans(), st.booleans()),  # limit, retry?, leave inflight?
    min_size=1,
    max_size=200,
)


class QueueModel:
    """What the store should hold, per delivery: its person, order key, state and due time."""

    def __init__(self, rows: list[tuple[int, str, str]]) -> None:
        self.person = {did: person for did, person, _ in rows}
        self.order = {did: (when, did) for did, _, when in rows}  # by event time, then id
        self.state = dict.fromkeys(self.person, "pending")
        self.due = dict.fromkeys(self.person, 0.0)
        self.claimed: dict[str, list[tuple[str, int]]] = {}  # person -> order keys as claimed

    def drained(self) -> bool:
        return all(state == "delivered" for state in self.state.values())

    def claim(self, job: Job, now: float) -> None:
        did = job.delivery_id
        assert self.state[did] == "pending", "claimed a job that was not pending"
        assert self.due[did] <= now, "claimed a job that was not due"
        blocking = [
            other
            for other, person in self.person.items()
            if person == job.person
            and (
                self.state[other] == "inflight"
                or (self.state[other] == "pending" and self.order[other] < self.order[did])
            )
        ]
        assert not blocking, f"{job.event_key} claimed while {blocking} pending or inflight"
        self.claimed.setdefault(job.person, []).append(self.order[did])
        self.state[did] = "inflight"

    def settle(self, job: Job, state: str, due: float = 0.0) -> None:
        self.state[job.delivery_id], self.due[job.delivery_id] = state, due


async def drain_and_check(
    path: Path,
    events: list[tuple[str, int, Action | None]],
    plan: list[tuple[int, bool, bool]],
    batch_size: int,
) -> None:
    """Ingest everything, then claim and settle by `plan` until the queue is drained."""
    async with opened(path) as store:
        swipes = [
            swipe(f"k{i}", MORNING + timedelta(minutes=m), badge=b, action=a)
            for i, (b, m, a) in enumerate(events)
        ]
        for start in range(0, len(swipes), batch_size):
            await ingest(store, *swipes[start : start + batch_size])
        # A late swipe that would change a direction already inferred is held at once, outside
        # the queue (test_intake covers it); the queue's order is about the rest.
        model = QueueModel(
            query(path, "SELECT id, person, event_time FROM deliveries WHERE state = 'pending'")
        )
        now = time.time() + 1
        unsettled: list[Job] = []
        steps = iter(plan)
        for _ in range(len(plan) + 10 * len(model.state) + 10):
            if model.drained():
                break
            limit, retry, keep_inflight = next(steps, (4, False, False))
            jobs = await claim(store, limit=limit, now=now)
            assert len(jobs) <= limit
            for job in jobs:
                model.claim(job, now)
            to_settle, unsettled = (unsettled, jobs) if keep_inflight else (unsettled + jobs, [])
            for job in to_settle:
                if retry and job.attempt < 3:
                    await store.settle(job, Result.retry("503"), retry_at=now + 30, now=now)
                    model.settle(job, "pending", due=now + 30)
                else:
                    await store.settle(job, Result.delivered(), retry_at=0, now=now)
                    model.settle(job, "delivered")
            now += 10
        assert model.drained(), "the queue did not drain"
    for person_order in model.claimed.values():
        assert person_order == sorted(person_order), "claim order per person went back in time"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=punches, plan=plans, batch_size=st.integers(1, 5))
def test_claims_follow_each_persons_event_order(
    events: list[tuple[str, int, Action | None]],
    plan: list[tuple[int, bool, bool]],
    batch_size: int,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(drain_and_check(Path(tmp) / "q.db", events, plan, batch_size))


# --- group commit ------------------------------------------------------------------------------


def _reject(conn: sqlite3.Connection, n: int) -> int:
    conn.execute(
        "INSERT INTO rejected (received_at, topic, format, payload, payload_size, reason)"
        " VALUES ('now', 't', 'canonical', x'00', 1, ?)",
        (f"n{n}",),
    )
    return n


def _reject_then_fail(conn: sqlite3.Connection) -> None:
    _reject(conn, 99)
    raise ValueError("this call's own bug")


async def test_writes_asked_for_together_share_one_commit_but_not_their_errors(tmp_path: Path):
    path = tmp_path / "q.db"
    async with opened(path) as store:
        statements: list[str] = []
        await store._db.set_trace_callback(statements.append)  # observes, changes nothing
        first = asyncio.ensure_future(store._write(_reject, 0))
        await asyncio.sleep(0)  # its commit has begun: the rest wait and go together
        results = await asyncio.gather(
            first,
            store._write(_reject, 1),
            store._write(_reject_then_fail),
            store._write(_reject, 2),
            return_exceptions=True,
        )
        await store._db.set_trace_callback(None)
    assert results[:2] == [0, 1]
    assert isinstance(results[2], ValueError)
    assert results[3] == 2
    assert statements.count("COMMIT") == 2
    # the failing call's own insert was undone, the others in its transaction kept
    assert query(path, "SELECT reason FROM rejected ORDER BY id") == [("n0",), ("n1",), ("n2",)]


async def test_status_reads_beside_a_long_write_instead_of_waiting_for_it(tmp_path: Path):
    """A /metrics scrape on a big database must not hold up ingest and delivery, nor wait for
    them: the status views read on a connection of their own."""
    async with opened(tmp_path / "q.db") as store:
        await ingest(store, swipe("a", MORNING))

        def slow_write(conn: sqlite3.Connection) -> None:
            _reject(conn, 1)
            time.sleep(1.0)  # stands in for a big batch and its fsync

        writing = asyncio.ensure_future(store._write(slow_write))
        await asyncio.sleep(0.1)  # the write holds the writer's thread now
        began = time.monotonic()
        status = await store.status(now=time.time())
        took = time.monotonic() - began
        await writing
    assert took < 0.5, f"status waited {took:.2f} s for the write"
    assert status["sinks"]["go2clock"]["states"] == {"pending": 1}  # type: ignore[index]
    assert status["rejected"] == 0  # the write had not committed yet
