"""The dispatcher on a real SQLite store: claiming ahead, handing back, sleeping without spinning.

The sink here is a small recording stand-in (the Dispatcher is what is under test; each real
sink has its own contract suite in test_sink_contract.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bridge.config import RetryConfig
from bridge.delivery import Job, Result
from bridge.dispatch.pump import CLAIM_AHEAD, Dispatcher
from bridge.events import Action
from bridge.ops.metrics import Metrics
from bridge.store import Store
from bridge.store.group_commit import GroupCommit
from tests.harness import eventually
from tests.test_store import MORNING, SINK, claim, ingest, opened, query, settle, swipe


class RecordingSink:
    """Answers with `answer(job)`, after waiting for `gate` when one is set."""

    name = SINK

    def __init__(self, answer: Callable[[Job], Result] = lambda _job: Result.delivered()):
        self.answer = answer
        self.sent: list[Job] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def send(self, job: Job) -> Result:
        self.sent.append(job)
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return self.answer(job)


@contextlib.asynccontextmanager
async def dispatching(
    store: Store, sink: RecordingSink, *, concurrency: int, grace: float = 5.0
) -> AsyncIterator[Dispatcher]:
    dispatcher = Dispatcher(
        sink=sink,
        store=store,
        concurrency=concurrency,
        retry=RetryConfig(initial_seconds=30, max_seconds=300),
        metrics=Metrics(),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop, grace_seconds=grace))
    try:
        yield dispatcher
    finally:
        stop.set()
        await asyncio.wait_for(task, grace + 10)


async def swipes(store: Store, people: int, per_person: int = 1) -> None:
    """`per_person` punches for each of `people` badges, in and out by turns, 10 minutes apart
    (no double swipes)."""
    events = [
        swipe(
            f"p{p}-{n}",
            MORNING + timedelta(minutes=10 * n),
            badge=f"B{p}",
            action=Action.OUT if n % 2 else Action.IN,
        )
        for n in range(per_person)
        for p in range(people)
    ]
    assert all(s.status == "accepted" for s in await ingest(store, *events))


async def cpu_seconds_over(seconds: float) -> float:
    """CPU this process used (event loop and database thread) while waiting `seconds`."""
    began = time.process_time()
    await asyncio.sleep(seconds)
    return time.process_time() - began


async def test_everything_is_delivered_in_per_person_order_with_claims_ahead(tmp_path: Path):
    async with opened(store_path(tmp_path)) as store:
        await swipes(store, people=30, per_person=4)
        sink = RecordingSink()
        async with dispatching(store, sink, concurrency=4):
            await eventually(lambda: len(sink.sent) == 120, timeout=10)
        by_person: dict[str, list[datetime]] = {}
        for job in sink.sent:
            by_person.setdefault(job.person, []).append(job.time)
        assert all(times == sorted(times) for times in by_person.values())
        assert query(store_path(tmp_path), "SELECT DISTINCT state FROM deliveries") == [
            ("delivered",)
        ]


def store_path(tmp_path: Path) -> Path:
    return tmp_path / "q.db"


async def test_never_more_requests_at_once_than_the_concurrency(tmp_path: Path):
    async with opened(store_path(tmp_path)) as store:
        await swipes(store, people=20)
        sink = RecordingSink()
        sink.gate = asyncio.Event()
        async with dispatching(store, sink, concurrency=3):
            await eventually(lambda: len(sink.sent) == 3, timeout=10)
            await asyncio.sleep(0.3)
            assert len(sink.sent) == 3, "claimed ahead, but not sent ahead"
            # Claimed ahead: up to CLAIM_AHEAD more are held as 'inflight', waiting for a slot.
            held = query(
                store_path(tmp_path), "SELECT COUNT(*) FROM deliveries WHERE state = 'inflight'"
            )[0][0]
            assert 3 < held <= 3 + CLAIM_AHEAD
            sink.gate.set()
            await eventually(lambda: len(sink.sent) == 20, timeout=10)


async def test_deliveries_claimed_ahead_are_handed_back_when_the_sink_fails(tmp_path: Path):
    """Once the vendor is found down (the connection refused), the ones waiting for a slot are
    not sent into the outage (one probe at a time from then on) and their attempt is not
    counted. (A vendor that answers 5xx now and then is not down: test_flaky_vendor.py.)"""
    async with opened(store_path(tmp_path)) as store:
        await swipes(store, people=12)
        refused = Result.retry("ClientConnectorError: Connect call failed", unreachable=True)
        sink = RecordingSink(answer=lambda _job: refused)
        sink.gate = asyncio.Event()
        async with dispatching(store, sink, concurrency=2):
            await eventually(lambda: len(sink.sent) == 2, timeout=10)
            await asyncio.sleep(0.2)  # the claim ahead is in
            sink.gate.set()
            await asyncio.sleep(0.5)
            assert len(sink.sent) == 2, "a delivery claimed ahead was sent into the outage"
        attempts = query(store_path(tmp_path), "SELECT SUM(attempts) FROM deliveries")[0][0]
        assert attempts == 2
        assert query(store_path(tmp_path), "SELECT DISTINCT state FROM deliveries") == [
            ("pending",)
        ]


async def test_stopping_hands_back_what_was_not_sent(tmp_path: Path):
    async with opened(store_path(tmp_path)) as store:
        await swipes(store, people=6)
        sink = RecordingSink()
        sink.gate = asyncio.Event()
        async with dispatching(store, sink, concurrency=1, grace=0.3):
            await eventually(lambda: len(sink.sent) == 1, timeout=10)
            await asyncio.sleep(0.2)
        rows = query(
            store_path(tmp_path), "SELECT state, attempts, COUNT(*) FROM deliveries GROUP BY 1, 2"
        )
        # The one at the vendor when the grace ran out stays in flight (sent again at the next
        # start); the ones waiting for a slot are pending again, their attempt not used.
        assert sorted(rows) == [("inflight", 1, 1), ("pending", 0, 5)]


async def test_no_busy_loop_while_a_persons_later_punches_wait_behind_a_retry(tmp_path: Path):
    async with opened(store_path(tmp_path)) as store:
        await swipes(store, people=1, per_person=4)
        [first] = await claim(store)
        await settle(store, first, Result.retry("HTTP 503"), retry_at=time.time() + 30)
        sink = RecordingSink()
        async with dispatching(store, sink, concurrency=4):
            cpu = await cpu_seconds_over(1.5)
        assert sink.sent == []
        assert cpu < 0.3, f"the pump spun: {cpu:.2f} s of CPU in 1.5 s"


async def test_no_busy_loop_while_a_persons_later_punches_wait_behind_one_in_flight(
    tmp_path: Path,
):
    async with opened(store_path(tmp_path)) as store:
        await swipes(store, people=1, per_person=4)
        sink = RecordingSink()
        sink.gate = asyncio.Event()
        async with dispatching(store, sink, concurrency=4):
            await eventually(lambda: len(sink.sent) == 1, timeout=10)
            cpu = await cpu_seconds_over(1.5)
            sink.gate.set()
            await eventually(lambda: len(sink.sent) == 4, timeout=10)
        assert cpu < 0.3, f"the pump spun: {cpu:.2f} s of CPU in 1.5 s"


async def test_a_retry_schedules_the_persons_later_punches_behind_it(tmp_path: Path):
    async with opened(store_path(tmp_path)) as store:
        await swipes(store, people=2, per_person=3)
        jobs = await claim(store)
        retry_at = time.time() + 120
        mine = next(job for job in jobs if job.person == "p-B0")
        await settle(store, mine, Result.retry("HTTP 503"), retry_at=retry_at)
        rows = query(
            store_path(tmp_path),
            "SELECT person, next_attempt_at FROM deliveries WHERE state = 'pending'",
        )
        assert all(at >= retry_at for person, at in rows if person == "p-B0")
        assert all(at < retry_at for person, at in rows if person == "p-B1")
        claim_after = await store.claim_batch(SINK, limit=10, now=time.time())
        assert claim_after.jobs == []  # B1's next waits behind B1's own one in flight
        assert claim_after.next_due is not None
        assert claim_after.next_due >= retry_at


class Transactions:
    """A stand-in database for GroupCommit: records what each transaction held."""

    def __init__(self, *, seconds: float = 0.0, fail_commit: bool = False) -> None:
        self.committed: list[list[int]] = []
        self.durable: list[bool] = []
        self._open: list[int] | None = None
        self._seconds = seconds
        self._fail_commit = fail_commit

    def window(self, **options: Any) -> GroupCommit[int, int]:
        return GroupCommit(begin=self.begin, run=self.run, commit=self.commit, **options)

    async def begin(self, items: list[int], durable: bool) -> list[int]:
        assert self._open is None, "a transaction is already open"
        self._open = []
        self.durable.append(durable)
        return await self.run(items)

    async def run(self, items: list[int]) -> list[int]:
        assert self._open is not None
        self._open += items
        return [item * 10 for item in items]

    async def commit(self) -> None:
        await asyncio.sleep(self._seconds)  # a commit's fsync
        opened, self._open = self._open, None
        if self._fail_commit:
            raise OSError("disk full")
        assert opened is not None
        self.committed.append(opened)


async def test_group_commit_writes_what_arrives_during_a_commit_as_one_batch():
    db = Transactions(seconds=0.05)
    commit = db.window()
    first = commit.submit(0).committed
    await asyncio.sleep(0.01)  # its commit has begun
    rest = [commit.submit(n).committed for n in range(1, 20)]
    answers = await asyncio.gather(first, *rest)
    assert answers == [n * 10 for n in range(20)]
    assert db.committed == [[0], list(range(1, 20))]


async def test_group_commit_tells_every_writer_of_a_failed_batch():
    db = Transactions(fail_commit=True)
    commit = db.window()
    results = await asyncio.gather(
        *(commit.submit(n).committed for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(result, OSError) for result in results)


async def test_an_urgent_write_keeps_its_transaction_open_for_what_comes_meanwhile():
    """store.commit_wait_seconds: an ingest is run at once (its caller reads the answer before
    the commit: the terminal's feedback) and its transaction stays open for the window; what
    arrives meanwhile is run in it, and all are committed together, flushed."""
    db = Transactions()
    commit = db.window(urgent=lambda item: item % 2 == 1, window_seconds=0.5)
    loop = asyncio.get_running_loop()
    began = loop.time()
    first = commit.submit(1)
    assert await first.ran == 10
    assert loop.time() - began < 0.2  # answered at once
    assert not first.committed.done()
    later = [commit.submit(n) for n in (2, 3)]
    assert [await submitted.ran for submitted in later] == [20, 30]
    assert await first.committed == 10
    assert loop.time() - began >= 0.45  # committed when the window closed
    assert [await submitted.committed for submitted in later] == [20, 30]
    assert db.committed == [[1, 2, 3]]
    assert db.durable == [True]


async def test_writes_that_need_no_flush_wait_for_a_window_or_commit_alone():
    db = Transactions()
    commit = db.window(
        urgent=lambda item: item % 2 == 1, window_seconds=0.2, linger_seconds=5.0, linger_max=4
    )
    loop = asyncio.get_running_loop()
    lazy = [commit.submit(n) for n in (0, 2)]
    await asyncio.sleep(0.2)
    assert db.committed == []  # waiting for an urgent write to open a window
    urgent = commit.submit(5)
    await asyncio.gather(*(submitted.committed for submitted in [*lazy, urgent]))
    assert db.committed == [[0, 2, 5]]
    assert db.durable == [True]
    began = loop.time()
    # Four lazy ones make a batch worth a commit: no waiting for the linger, and no flush.
    await asyncio.gather(*(commit.submit(n).committed for n in (10, 12, 14, 16)))
    assert loop.time() - began < 1.0
    assert db.committed[-1] == [10, 12, 14, 16]
    assert db.durable[-1] is False


async def test_commit_soon_closes_the_open_window():
    db = Transactions()
    commit = db.window(window_seconds=30.0)
    submitted = commit.submit(1)
    await submitted.ran
    commit.commit_soon()
    assert await asyncio.wait_for(submitted.committed, timeout=5) == 10


async def test_an_open_window_is_committed_once_enough_claims_and_settles_wait_in_it():
    """Dispatchers waiting on a window's commit claim nothing new meanwhile: once linger_max
    of their writes are in it, it is committed without waiting out its time."""
    db = Transactions()
    odd = lambda item: item % 2 == 1  # noqa: E731 - the ingests
    commit = db.window(urgent=odd, opens_window=odd, window_seconds=30.0, linger_max=4)
    first = commit.submit(1)
    await first.ran
    waiting = [commit.submit(n) for n in (2, 4, 6, 8)]
    await asyncio.wait_for(asyncio.gather(*(s.committed for s in waiting)), timeout=5)
    assert db.committed == [[1, 2, 4, 6, 8]]


async def test_an_urgent_write_that_comes_while_the_writer_waits_for_the_lock_is_flushed():
    """A settle starts the writer, which waits for the connection (another user holds the
    lock); an ingest that arrives meanwhile goes into the same transaction, which must then be
    flushed."""
    db = Transactions()
    lock = asyncio.Lock()
    commit = db.window(lock=lock, urgent=lambda item: item % 2 == 1)
    async with lock:
        lazy = commit.submit(2)
        await asyncio.sleep(0.05)  # the writer is waiting for the lock
        urgent = commit.submit(3)
    await asyncio.gather(lazy.committed, urgent.committed)
    assert db.committed == [[2, 3]]
    assert db.durable == [True]
