"""The queue's half of the store contract (issue 16, item 2): claiming and settling, tested
against the SQLite store and the PostgreSQL store alike (tests/test_store.py holds what is the
SQLite file's own: pragmas, migrations, a damaged file)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.delivery import EventStatus, Job, Result
from bridge.events import Action
from tests.test_store_contract import MORNING, SINK, Backend, backend, claim, ingest, swipe

__all__ = ["backend"]  # the fixture, imported to run these tests on both backends


async def _jobs(store: Any, **kw: Any) -> list[Job]:
    return list((await claim(store, **kw)).jobs)


def _keys(jobs: list[Job]) -> list[str]:
    return [job.event_key for job in jobs]


async def _settle(store: Any, job: Job, result: Result, *, retry_at: float = 0.0) -> str:
    return str(await store.settle(job, result, retry_at=retry_at, now=time.time()))


async def test_a_double_swipe_is_per_person(backend: Backend) -> None:
    async with backend.open() as store:
        stored = await ingest(store, swipe("a", MORNING), swipe("b", MORNING, badge="B2"))
        assert [s.status for s in stored] == [EventStatus.ACCEPTED, EventStatus.ACCEPTED]


async def test_attempts_are_counted_at_claim(backend: Backend) -> None:
    async with backend.open() as store:
        await ingest(store, swipe("a", MORNING))
        [job] = await _jobs(store)
        row = await store.delivery(job.delivery_id)
        assert (job.attempt, row["state"], row["attempts"]) == (1, "inflight", 1)
        now = time.time()
        await store.settle(job, Result.retry("HTTP 503"), retry_at=now, now=now)
        [again] = await _jobs(store, now=now + 1)
        assert again.attempt == 2
        assert (await store.delivery(job.delivery_id))["attempts"] == 2


async def test_a_job_carries_the_event(backend: Backend) -> None:
    async with backend.open() as store:
        await ingest(store, swipe("a", MORNING, action=Action.BREAK_START))
        [job] = await _jobs(store)
    assert (job.event_key, job.sink, job.person, job.action, job.time, job.terminal) == (
        "a",
        SINK,
        "g-B1",
        Action.BREAK_START,
        MORNING,
        "door-1",
    )
    assert job.state == {}


async def test_per_person_only_the_oldest_pending_is_claimable(backend: Backend) -> None:
    """Stored newest first, so the event time and not the insertion order decides."""
    async with backend.open() as store:
        for hours, key, action in [
            (3, "c", Action.OUT),
            (2, "b", Action.BREAK_END),
            (1, "a", Action.BREAK_START),
        ]:
            await ingest(store, swipe(key, MORNING + timedelta(hours=hours), action=action))
        order: list[str] = []
        while jobs := await _jobs(store):
            assert len(jobs) == 1
            assert await _jobs(store) == [], "nothing else while one of theirs is in flight"
            order += _keys(jobs)
            await _settle(store, jobs[0], Result.delivered())
    assert order == ["a", "b", "c"]


async def test_equal_times_go_in_the_order_stored(backend: Backend) -> None:
    async with backend.open() as store:
        await ingest(
            store,
            swipe("first", MORNING, action=Action.IN),
            swipe("second", MORNING, action=Action.BREAK_START),
        )
        [job] = await _jobs(store)
        assert job.event_key == "first"
        await _settle(store, job, Result.delivered())
        assert _keys(await _jobs(store)) == ["second"]


async def test_different_people_are_claimed_together_up_to_the_limit(backend: Backend) -> None:
    async with backend.open() as store:
        await ingest(store, *[swipe(f"k{n}", MORNING, badge=f"B{n}") for n in range(5)])
        first = await _jobs(store, limit=3)
        second = await _jobs(store, limit=3)
        assert (len(first), len(second)) == (3, 2)
        assert len({job.person for job in first + second}) == 5
        assert await _jobs(store, limit=3) == []


async def test_a_delivery_that_is_not_due_is_not_claimed(backend: Backend) -> None:
    async with backend.open() as store:
        before = time.time() - 5
        await ingest(store, swipe("a", MORNING))
        assert await _jobs(store, now=before) == [], "created after `now`: not due yet"
        [job] = await _jobs(store)
        now = time.time()
        await store.settle(job, Result.retry("timeout"), retry_at=now + 60, now=now)
        assert await _jobs(store, now=now + 59.9) == []
        assert _keys(await _jobs(store, now=now + 60)) == ["a"]


@pytest.mark.parametrize(
    ("result", "state", "error"),
    [
        (Result.delivered("ok"), "delivered", None),
        (Result.duplicate("already there"), "delivered", None),
        (Result.retry("HTTP 502"), "pending", "HTTP 502"),
        (Result.dead("HTTP 400 bad badge"), "dead", "HTTP 400 bad badge"),
    ],
)
async def test_a_settle_writes_its_outcome(
    backend: Backend, result: Result, state: str, error: str | None
) -> None:
    async with backend.open() as store:
        await ingest(store, swipe("a", MORNING))
        [job] = await _jobs(store)
        retry_at = time.time() + 123.5
        returned = await _settle(store, job, result, retry_at=retry_at)
        row = await store.delivery(job.delivery_id)
    assert (returned, row["state"], row["last_error"], row["attempts"]) == (state, state, error, 1)
    if state == "pending":
        assert row["next_attempt_at"] == pytest.approx(retry_at)
    if state == "delivered":
        assert row["outcome"] == result.outcome.value


async def test_a_paused_settle_gives_the_attempt_back(backend: Backend) -> None:
    async with backend.open() as store:
        await ingest(store, swipe("a", MORNING))
        [job] = await _jobs(store)
        now = time.time()
        state = await store.settle(job, Result.paused("HTTP 401"), retry_at=now + 500, now=now)
        row = await store.delivery(job.delivery_id)
        assert (state, row["state"], row["attempts"]) == ("pending", "pending", 0)
        assert row["next_attempt_at"] == pytest.approx(now)
        [again] = await _jobs(store, now=now)  # due at once: first in line when resumed
        assert again.attempt == 1


@pytest.mark.parametrize("result", [Result.held("out without an open shift"), Result.dead("400")])
async def test_held_or_dead_does_not_block_the_persons_later_punches(
    backend: Backend, result: Result
) -> None:
    async with backend.open() as store:
        await ingest(
            store,
            swipe("a", MORNING, action=Action.OUT),
            swipe("b", MORNING + timedelta(hours=1), action=Action.IN),
        )
        [job] = await _jobs(store)
        assert job.event_key == "a"
        returned = await _settle(store, job, result)
        assert _keys(await _jobs(store)) == ["b"]
        row = await store.delivery(job.delivery_id)
    expected = "held" if result.outcome == "held" else "dead"
    assert (returned, row["state"], row["last_error"]) == (expected, expected, result.detail)


async def test_person_state_round_trips_to_the_next_claim(backend: Backend) -> None:
    clock = {"running": True, "since": "2026-11-23T07:00:00Z", "breaks": [1, 2.5], "x": None}
    async with backend.open() as store:
        await ingest(
            store,
            swipe("a", MORNING),
            swipe("other", MORNING, badge="B2"),
            swipe("b", MORNING + timedelta(hours=2), action=Action.BREAK_START),
            swipe("c", MORNING + timedelta(hours=3), action=Action.BREAK_END),
        )
        jobs = await _jobs(store)
        assert [job.state for job in jobs] == [{}, {}]
        job_a = next(job for job in jobs if job.event_key == "a")
        await _settle(store, job_a, Result.delivered(state=clock))
        [job_b] = await _jobs(store)
        assert job_b.state == clock
        await _settle(store, job_b, Result.retry("503"))  # state None: the saved one stays
        [job_b_again] = await _jobs(store, now=time.time() + 1)
        assert job_b_again.state == clock
        await _settle(store, job_b_again, Result.delivered(state={"running": False}))
        [job_c] = await _jobs(store)
        assert job_c.state == {"running": False}


async def test_expiry_counts_from_when_the_bridge_stored_the_event(backend: Backend) -> None:
    """A three-week-old punch from a terminal's buffer is retried like any other; what the
    bridge has been retrying for longer than the limit is given up."""
    now = time.time()
    three_weeks_ago = datetime.fromtimestamp(now, UTC) - timedelta(days=21)
    async with backend.open() as store:
        await ingest(
            store, swipe("late", three_weeks_ago), swipe("new", three_weeks_ago, badge="B2")
        )
        jobs = {job.event_key: job for job in await _jobs(store)}
        assert await store.expire(jobs["late"], now=now, max_age_days=14) is False
        later = jobs["new"].stored_at + 15 * 86400
        assert await store.expire(jobs["new"], now=later, max_age_days=14) is True
        late = await store.delivery(jobs["late"].delivery_id)
        new = await store.delivery(jobs["new"].delivery_id)
    assert (late["state"], new["state"]) == ("inflight", "dead")
    assert "more than 14 days since it was stored" in new["last_error"]
