"""One contract, two backends (issue 16, item 2): the same tests against the SQLite store and the
PostgreSQL store (a database of its own on the machine's server; skipped with the reason where
none answers). Where the backends differ by design, the test says how:

- two claimers: on SQLite, concurrent claims of the one daemon; on PostgreSQL, two instances;
- a dead claimer's work: on SQLite it comes back when the daemon starts again; on PostgreSQL it
  comes back to the other instances when the dead one's lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.delivery import EventStatus, Job, Result
from bridge.events import Action, ClockEvent
from bridge.store import Incoming, Store
from bridge.store.postgres import PostgresStore
from tests.postgres import fresh_database

BERLIN = ZoneInfo("Europe/Berlin")
MORNING = datetime(2026, 11, 23, 8, 0, tzinfo=BERLIN).astimezone(UTC)
SINK = "go2clock"

Opener = Callable[..., contextlib.AbstractAsyncContextManager[Any]]


class Backend:
    """How a test opens the store under test; `open(**options)` may be called more than once
    (a restart on SQLite, another instance on PostgreSQL)."""

    def __init__(self, name: str, opener: Opener) -> None:
        self.name = name
        self.open = opener


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":

        def sqlite(**options: Any) -> contextlib.AbstractAsyncContextManager[Any]:
            options.pop("instance", None)
            options.pop("lease_seconds", None)
            return Store.open(tmp_path / "q.db", site_tz=BERLIN, **options)

        yield Backend("sqlite", sqlite)
        return
    with fresh_database() as url:

        def postgres(**options: Any) -> contextlib.AbstractAsyncContextManager[Any]:
            return PostgresStore.open(url, site_tz=BERLIN, **options)

        yield Backend("postgres", postgres)


def everyone(event: ClockEvent) -> dict[str, str | None]:
    return {"go2clock": f"g-{event.badge}", "mctime": f"m-{event.badge}"}


def swipe(key: str, at: datetime, *, badge: str = "B1", action: Action | None = Action.IN) -> Any:
    return ClockEvent(
        key=key, terminal="door-1", badge=badge, user=None, action=action, time=at, time_given=True
    )


async def ingest(store: Any, *events: ClockEvent) -> list[Any]:
    return list(
        await store.ingest(
            [Incoming(e, "clockin/door-1/events") for e in events],
            resolve=everyone,
            received_at=datetime.now(UTC),
        )
    )


async def claim(store: Any, *, limit: int = 10, now: float | None = None, **kw: Any) -> Any:
    return await store.claim_batch(
        SINK if "sink" not in kw else kw.pop("sink"),
        limit=limit,
        now=time.time() if now is None else now,
        **kw,
    )


async def deliver(store: Any, job: Job) -> None:
    await store.settle(job, Result.delivered(), retry_at=0, now=time.time())


# --- ingest ----------------------------------------------------------------------------------


async def test_the_same_event_twice_is_stored_once(backend: Backend) -> None:
    async with backend.open() as store:
        first = await ingest(store, swipe("a", MORNING))
        again = await ingest(store, swipe("a", MORNING))
        assert [s.status for s in first + again] == [EventStatus.ACCEPTED, EventStatus.REDELIVERED]
        assert [job.event_key for job in (await claim(store)).jobs] == ["a"]


async def test_a_double_swipe_is_recorded_and_not_sent(backend: Backend) -> None:
    async with backend.open() as store:
        stored = await ingest(
            store, swipe("a", MORNING), swipe("b", MORNING + timedelta(seconds=20))
        )
        assert [s.status for s in stored] == [EventStatus.ACCEPTED, EventStatus.DUPLICATE]
        assert [job.event_key for job in (await claim(store)).jobs] == ["a"]


async def test_swipes_without_an_action_toggle_within_a_shift(backend: Backend) -> None:
    async with backend.open() as store:
        times = [MORNING, MORNING + timedelta(hours=9), MORNING + timedelta(days=1)]
        stored = await ingest(store, *(swipe(f"k{n}", t, action=None) for n, t in enumerate(times)))
        assert [s.action for s in stored] == [Action.IN, Action.OUT, Action.IN]


async def test_a_late_swipe_that_would_change_a_direction_is_held(backend: Backend) -> None:
    async with backend.open() as store:
        await ingest(
            store,
            swipe("a", MORNING, action=None),
            swipe("c", MORNING + timedelta(hours=9), action=None),
        )
        [late] = await ingest(store, swipe("b", MORNING + timedelta(hours=4), action=None))
        assert late.held == ("go2clock", "mctime")
        assert late.reason.startswith("late: this out at")
        assert [job.event_key for job in (await claim(store)).jobs] == ["a"]


# --- the queue -------------------------------------------------------------------------------


async def test_an_earlier_retrying_punch_blocks_a_later_one(backend: Backend) -> None:
    async with backend.open() as store:
        await ingest(
            store, swipe("in", MORNING), swipe("out", MORNING + timedelta(hours=8), action=None)
        )
        now = time.time()
        [first] = (await claim(store, now=now)).jobs
        assert first.event_key == "in"
        await store.settle(first, Result.retry("503"), retry_at=now + 30, now=now)
        assert (await claim(store, now=now)).jobs == []  # `out` waits behind the retrying `in`
        [again] = (await claim(store, now=now + 31)).jobs
        assert (again.event_key, again.attempt) == ("in", 2)
        await store.settle(again, Result.delivered(), retry_at=0, now=now + 31)
        assert [j.event_key for j in (await claim(store, now=now + 31)).jobs] == ["out"]


async def test_the_settle_window_sorts_near_simultaneous_arrivals(backend: Backend) -> None:
    async with backend.open(settle_seconds=2) as store:
        await ingest(store, swipe("out", MORNING + timedelta(hours=8), action=Action.OUT))
        await ingest(store, swipe("in", MORNING))
        now = time.time()
        assert (await claim(store, now=now)).jobs == []
        assert [j.event_key for j in (await claim(store, now=now + 3)).jobs] == ["in"]


async def test_a_late_punch_is_held_at_a_sink_that_keeps_state(backend: Backend) -> None:
    async with backend.open() as store:
        await ingest(store, swipe("in", MORNING), swipe("out", MORNING + timedelta(hours=8)))
        for _ in range(2):
            for job in (await claim(store, sink="mctime", hold_late=True)).jobs:
                await deliver(store, job)
        await ingest(store, swipe("late", MORNING + timedelta(hours=4), action=Action.BREAK_START))
        result = await claim(store, sink="mctime", hold_late=True)
        assert result.jobs == []
        [(job, reason)] = result.late
        assert job.event_key == "late"
        assert reason == "late: older than the last action sent at 2026-11-23T16:00:00+01:00"


async def _claim_until_drained(
    store: Any, name: str, holders: dict[str, str], order: dict[str, list[datetime]], total: int
) -> None:
    """One claimer's loop: claim, check nobody else holds those people, hold them a moment
    (the other claimer claims meanwhile), deliver; until every punch is delivered."""
    rng = random.Random(name)
    deadline = time.monotonic() + 30
    while sum(len(times) for times in order.values()) < total:
        assert time.monotonic() < deadline, "the queue did not drain"
        result = await claim(store, limit=2)
        for job in result.jobs:
            assert job.person not in holders, f"{job.person} held by {holders.get(job.person)}"
            holders[job.person] = name
        await asyncio.sleep(rng.uniform(0.001, 0.01))
        for job in result.jobs:
            order.setdefault(job.person, []).append(job.time)
            del holders[job.person]
            await deliver(store, job)


@contextlib.asynccontextmanager
async def _claimers(backend: Backend) -> AsyncIterator[list[Any]]:
    """Two claimers: the one SQLite daemon twice, or two PostgreSQL instances."""
    async with backend.open(instance="one") as first:
        if backend.name == "sqlite":
            yield [first, first]
            return
        async with backend.open(instance="two") as second:
            yield [first, second]


async def test_two_claimers_never_hold_the_same_person(backend: Backend) -> None:
    async with _claimers(backend) as stores:
        events = [
            swipe(f"{badge}-{n}", MORNING + timedelta(minutes=10 * n), badge=badge)
            for n in range(6)
            for badge in ("B1", "B2", "B3", "B4")
        ]
        random.Random(3).shuffle(events)
        for event in events:
            await ingest(stores[0], event)
        holders: dict[str, str] = {}
        order: dict[str, list[datetime]] = {}
        await asyncio.gather(
            *(
                _claim_until_drained(s, f"c{n}", holders, order, len(events))
                for n, s in enumerate(stores)
            )
        )
        assert sum(len(times) for times in order.values()) == len(events)
        assert all(times == sorted(times) for times in order.values())


async def test_a_claim_by_a_dead_claimer_comes_back(backend: Backend) -> None:
    if backend.name == "sqlite":  # one daemon: its claims come back when it starts again
        async with backend.open() as store:
            await ingest(store, swipe("a", MORNING))
            [held] = (await claim(store)).jobs
        async with backend.open() as store:
            assert await store.recover_inflight() == 1
            [job] = (await claim(store)).jobs
    else:  # another instance takes it over once the dead one's lease runs out
        async with backend.open(instance="survivor", lease_seconds=30) as survivor:
            async with backend.open(instance="dies", lease_seconds=0.5) as dying:
                await ingest(dying, swipe("a", MORNING))
                [held] = (await claim(dying)).jobs
            assert (await claim(survivor)).jobs == []  # its lease still runs
            await asyncio.sleep(0.6)
            [job] = (await claim(survivor)).jobs
            # The dead instance's late settle, had it come, would write nothing now.
            assert await dying_settle_is_refused(backend, held)
    assert (job.event_key, job.attempt) == (held.event_key, 2)


async def dying_settle_is_refused(backend: Backend, job: Job) -> bool:
    async with backend.open(instance="dies") as ghost:
        state = await ghost.settle(job, Result.delivered(), retry_at=0, now=time.time())
    return str(state) == "inflight"


async def test_unmapped_deliveries_are_released_once_the_person_is_known(
    backend: Backend,
) -> None:
    def nobody(_event: Any) -> dict[str, str | None]:
        return {"go2clock": None}

    async with backend.open() as store:
        [stored] = await store.ingest(
            [Incoming(swipe("a", MORNING), "clockin/door-1/events")],
            resolve=nobody,
            received_at=datetime.now(UTC),
        )
        assert stored.status == EventStatus.UNMAPPED
        assert (await claim(store)).jobs == []
        assert await store.release_unmapped(resolve=everyone) == 1
        [job] = (await claim(store)).jobs
        assert (job.event_key, job.person) == ("a", "g-B1")
        assert (await store.status(now=time.time()))["events"] == {"accepted": 1}


async def test_status_counts_what_the_queue_holds(backend: Backend) -> None:
    async with backend.open() as store:
        await ingest(
            store,
            swipe("a", MORNING, action=None),
            swipe("b", MORNING, badge="B2"),
            swipe("c", MORNING + timedelta(seconds=5), badge="B2"),  # a double swipe
        )
        [first, _] = (await claim(store)).jobs
        await deliver(store, first)
        status = await store.status(now=time.time())
    assert status["events"] == {"accepted": 2, "duplicate": 1}
    assert status["inferred"] == 1
    queue = {sink: entry["states"] for sink, entry in status["sinks"].items()}
    assert queue == {
        "go2clock": {"delivered": 1, "inflight": 1},
        "mctime": {"pending": 2},
    }


async def test_retention_prunes_only_what_ended_and_keeps_the_keys(
    backend: Backend, tmp_path: Path
) -> None:
    from bridge.store import RetentionPolicy

    async with backend.open() as store:
        await ingest(store, swipe("done", MORNING), swipe("waiting", MORNING, badge="B2"))
        for sink in ("go2clock", "mctime"):
            for job in (await claim(store, sink=sink)).jobs:
                if job.event_key == "done":
                    await deliver(store, job)
        policy = RetentionPolicy(
            retain_days=2, dedupe_days=60, rejected_retain_days=30, archive_dir=tmp_path / "arc"
        )
        report = await store.prune(policy, now=time.time() + 3 * 86400)
        assert (report.events, report.deliveries, report.archive_files) == (1, 2, 1)
        [again] = await ingest(store, swipe("done", MORNING))
        assert again.status == EventStatus.REDELIVERED  # its key outlives the row
        status = await store.status(now=time.time())
    assert status["events"] == {"accepted": 1}  # the undelivered one stays


async def test_the_directory_cache_keeps_each_sources_last_good_records(backend: Backend) -> None:
    rows = [{"badge": "B1", "join_on": None, "fields": {"userid": "7", "name": "Ana"}}]
    async with backend.open() as store:
        assert await store.directory_revision() == 0
        assert await store.save_directory_source("go2clock", iter(rows), now=100.0)
        revision = await store.directory_revision()
        assert not await store.save_directory_source("go2clock", rows, now=200.0)  # unchanged
        assert await store.directory_revision() == revision
        await store.directory_source_failed("go2clock", "503", now=300.0)
        cached = await store.directory_records(["go2clock", "mctime"])
        [state] = await store.directory_sync_state()
    assert cached == {"go2clock": rows, "mctime": []}
    assert (state["source"], state["records"], state["synced_at"]) == ("go2clock", 1, 200.0)
    assert (state["error"], state["failed_at"]) == ("503", 300.0)


async def test_an_implausible_device_time_is_held_and_decides_nothing(backend: Backend) -> None:
    from bridge.events import ImplausibleTime, TimeProblem

    held = ImplausibleTime(TimeProblem.TOO_FAR_AHEAD, "implausible time: device said 2099")
    future = swipe("2099", MORNING.replace(year=2099), action=None)
    async with backend.open() as store:
        [stored] = await store.ingest(
            [Incoming(future, "clockin/door-1/events", held=held)],
            resolve=everyone,
            received_at=datetime.now(UTC),
        )
        assert (stored.status, stored.reason) == (EventStatus.HELD, held.reason)
        [later] = await ingest(store, swipe("now", MORNING, action=None))
        assert later.action is Action.IN  # not decided by the held one
        assert [job.event_key for job in (await claim(store)).jobs] == ["now"]
        status = await store.status(now=time.time())
    assert status["sinks"]["go2clock"]["states"] == {"held": 1, "inflight": 1}


async def test_a_held_time_is_booked_at_its_received_time(backend: Backend) -> None:
    from bridge.events import ImplausibleTime, TimeProblem

    held = ImplausibleTime(TimeProblem.TOO_FAR_AHEAD, "implausible time: device said 2099")
    received = MORNING + timedelta(hours=1)
    async with backend.open() as store:
        for key, badge in (("far", "B1"), ("twice", "B2")):
            await store.ingest(
                [
                    Incoming(
                        swipe(key, MORNING.replace(year=2099), badge=badge, action=None),
                        "clockin/door-1/events",
                        held=held,
                    )
                ],
                resolve=everyone,
                received_at=received,
            )
        # B2 swiped again, with a plausible time, within the double-swipe window of `received`
        await ingest(store, swipe("again", received + timedelta(seconds=10), badge="B2"))
        ids = {job.event_key for job in (await claim(store)).jobs}
        assert ids == {"again"}  # the held ones wait
        far = await _held_delivery(store, "far")
        assert (await store.held_for_time(far)).needs_people is False
        booked = await store.book_at_received_time(far, people={}, now=time.time())
        assert (booked.status, booked.action, len(booked.requeued)) == (
            EventStatus.ACCEPTED,
            Action.IN,
            2,
        )
        [job] = (await claim(store)).jobs
        assert (job.event_key, job.time) == ("far", received)
        twice = await store.book_at_received_time(
            await _held_delivery(store, "twice"), people={}, now=time.time()
        )
        assert (twice.status, twice.duplicate_of, len(twice.dropped)) == (
            EventStatus.DUPLICATE,
            "again",
            2,
        )
        with pytest.raises(LookupError, match="not held"):
            await store.held_for_time(far)


async def _held_delivery(store: Any, key: str) -> int:
    rows = await store.deliveries_in("held", sink="go2clock")
    return next(int(row["id"]) for row in rows if row["event_key"] == key)


# --- property: per-person order under retries, on both backends -------------------------------

PROPERTY_EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "12"))

_punches = st.lists(
    st.tuples(
        st.sampled_from(["B1", "B2", "B3"]),
        st.integers(min_value=0, max_value=12 * 60),  # minutes after MORNING
        st.sampled_from([*Action, None]),
    ),
    min_size=1,
    max_size=20,
)
_plans = st.lists(st.tuples(st.integers(1, 4), st.booleans()), min_size=1, max_size=60)


async def _drain_in_order(
    backend: Backend, events: list[tuple[str, int, Action | None]], plan: list[tuple[int, bool]]
) -> None:
    """Ingest, then claim and settle (retrying some) until drained: no claim of a person while
    one of theirs is in flight or an earlier one pending; each person's claims in time order."""
    async with backend.open() as store:
        for n, (badge, minutes, action) in enumerate(events):
            at = MORNING + timedelta(minutes=minutes)
            await ingest(store, swipe(f"k{n}", at, badge=badge, action=action))
        pending = await store.deliveries_in("pending", sink=SINK)
        order = {row["id"]: (row["event_time"], row["id"]) for row in pending}
        person = {row["id"]: row["person"] for row in pending}
        state = dict.fromkeys(order, "pending")
        claimed: dict[str, list[tuple[str, int]]] = {}
        now = time.time() + 1
        steps = iter(plan)
        for _ in range(len(plan) + 10 * len(order) + 10):
            if all(value == "delivered" for value in state.values()):
                break
            limit, retry = next(steps, (4, False))
            for job in (await claim(store, limit=limit, now=now)).jobs:
                did = job.delivery_id
                assert state[did] == "pending"
                blocking = [
                    other
                    for other, who in person.items()
                    if who == job.person
                    and (
                        state[other] == "inflight"
                        or (state[other] == "pending" and order[other] < order[did])
                    )
                ]
                assert not blocking, f"{job.event_key} claimed before {blocking}"
                claimed.setdefault(job.person, []).append(order[did])
                if retry and job.attempt < 3:
                    await store.settle(job, Result.retry("503"), retry_at=now + 30, now=now)
                else:
                    await store.settle(job, Result.delivered(), retry_at=0, now=now)
                    state[did] = "delivered"
            now += 10
        assert all(value == "delivered" for value in state.values()), "did not drain"
    assert all(keys == sorted(keys) for keys in claimed.values())


@pytest.mark.parametrize("name", ["sqlite", "postgres"])
@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(events=_punches, plan=_plans)
def test_claims_follow_each_persons_event_order(
    name: str, events: list[tuple[str, int, Action | None]], plan: list[tuple[int, bool]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if name == "sqlite":

            def sqlite(**options: Any) -> contextlib.AbstractAsyncContextManager[Any]:
                return Store.open(Path(tmp) / "q.db", site_tz=BERLIN, **options)

            asyncio.run(_drain_in_order(Backend("sqlite", sqlite), events, plan))
            return
        with fresh_database() as url:

            def postgres(**options: Any) -> contextlib.AbstractAsyncContextManager[Any]:
                return PostgresStore.open(url, site_tz=BERLIN, **options)

            asyncio.run(_drain_in_order(Backend("postgres", postgres), events, plan))
