"""Ingest's half of the store contract (issue 16, item 2): duplicates (layers 1 and 2) and the
direction of a swipe without an action, against the SQLite store and the PostgreSQL store alike.
tests/test_store.py also checks the SQLite rows these leave behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bridge.delivery import EventStatus
from bridge.events import Action
from bridge.store.inference import InferenceRules
from tests.test_store_contract import MORNING, Backend, backend, claim, ingest, swipe

__all__ = ["backend"]  # the fixture, imported to run these tests on both backends

BERLIN = ZoneInfo("Europe/Berlin")
WINDOW = 60


async def test_the_same_key_twice_in_one_batch_is_one_event(backend: Backend) -> None:
    """Group commit: the second sees the first's row of the same, uncommitted batch."""
    async with backend.open(window_seconds=WINDOW) as store:
        out = MORNING + timedelta(hours=1)
        batch = await ingest(store, swipe("k", out, action=Action.OUT), swipe("k", out))
        assert [s.status for s in batch] == [EventStatus.ACCEPTED, EventStatus.REDELIVERED]
        assert [job.event_key for job in (await claim(store)).jobs] == ["k"]


@pytest.mark.parametrize(
    ("first", "second", "gap", "expected"),
    [
        (Action.IN, Action.IN, 10, EventStatus.DUPLICATE),
        (Action.IN, Action.IN, WINDOW, EventStatus.DUPLICATE),  # the window's edge still counts
        (Action.IN, Action.IN, WINDOW + 1, EventStatus.ACCEPTED),
        (Action.IN, Action.OUT, 10, EventStatus.ACCEPTED),
        (Action.BREAK_START, Action.BREAK_START, 30, EventStatus.DUPLICATE),
        (Action.IN, Action.IN, -10, EventStatus.DUPLICATE),  # arrived late: 10 s before the first
        (Action.IN, Action.IN, -WINDOW - 1, EventStatus.ACCEPTED),
    ],
)
async def test_a_double_swipe_within_the_window(
    backend: Backend, first: Action, second: Action, gap: int, expected: EventStatus
) -> None:
    async with backend.open(window_seconds=WINDOW) as store:
        await ingest(store, swipe("a", MORNING, action=first))
        [stored] = await ingest(store, swipe("b", MORNING + timedelta(seconds=gap), action=second))
        sent = [job.event_key for job in (await claim(store)).jobs]
    assert stored.status == expected
    if expected == EventStatus.DUPLICATE:
        assert stored.reason == "double swipe"
        assert sent == ["a"]


@pytest.mark.parametrize(
    ("gap", "action", "status"),
    [
        (timedelta(seconds=10), Action.IN, EventStatus.DUPLICATE),  # not an instant `out`
        (timedelta(hours=2), Action.OUT, EventStatus.ACCEPTED),
    ],
)
async def test_a_swipe_without_action_after_an_in(
    backend: Backend, gap: timedelta, action: Action, status: EventStatus
) -> None:
    async with backend.open(window_seconds=WINDOW) as store:
        await ingest(store, swipe("a", MORNING, action=Action.IN))
        [stored] = await ingest(store, swipe("b", MORNING + gap, action=None))
    assert (stored.action, stored.status) == (action, status)


async def test_inference_skips_a_double_swipe(backend: Backend) -> None:
    """in, an `out` 2 h later, a repeated `out`, then a bare swipe 2 h later: back `in`."""
    async with backend.open(window_seconds=WINDOW) as store:
        await ingest(store, swipe("a", MORNING, action=None))
        await ingest(store, swipe("b", MORNING + timedelta(hours=2), action=None))
        [repeat] = await ingest(
            store, swipe("c", MORNING + timedelta(hours=2, seconds=5), action=Action.OUT)
        )
        [last] = await ingest(store, swipe("d", MORNING + timedelta(hours=4), action=None))
    assert repeat.status == EventStatus.DUPLICATE
    assert (last.action, last.status) == (Action.IN, EventStatus.ACCEPTED)


async def test_the_local_day_does_not_decide_direction(backend: Backend) -> None:
    """23:30 and 00:30 Berlin are two local days but one shift: the second swipe is `out`."""
    evening = datetime(2026, 11, 23, 23, 30, tzinfo=BERLIN)
    after_midnight = datetime(2026, 11, 24, 0, 30, tzinfo=BERLIN)
    async with backend.open(window_seconds=WINDOW) as store:
        await ingest(store, swipe("a", evening, action=Action.IN))
        [stored] = await ingest(store, swipe("b", after_midnight, action=None))
    assert (stored.action, stored.status) == (Action.OUT, EventStatus.ACCEPTED)


@pytest.mark.parametrize(("hours", "action"), [(15, Action.OUT), (16, Action.IN), (30, Action.IN)])
async def test_a_previous_swipe_max_shift_hours_back_starts_a_new_shift(
    backend: Backend, hours: int, action: Action
) -> None:
    async with backend.open(window_seconds=WINDOW) as store:
        await ingest(store, swipe("a", MORNING, action=None))
        [stored] = await ingest(store, swipe("b", MORNING + timedelta(hours=hours), action=None))
    assert (stored.action, stored.status) == (action, EventStatus.ACCEPTED)


async def test_inference_counts_earlier_events_of_the_same_batch(backend: Backend) -> None:
    """Two night shifts in one ingest batch: in, out, in, out."""
    night = datetime(2026, 11, 23, 22, 0, tzinfo=BERLIN)
    batch = [swipe(f"n{h}", night + timedelta(hours=h), action=None) for h in (0, 8, 24, 32)]
    async with backend.open(window_seconds=WINDOW) as store:
        stored = await ingest(store, *batch)
    assert [item.action for item in stored] == [Action.IN, Action.OUT, Action.IN, Action.OUT]


async def test_the_store_takes_its_inference_rules(backend: Backend) -> None:
    rules = InferenceRules(tz=BERLIN, window_seconds=WINDOW, max_shift=timedelta(hours=4))
    async with backend.open(window_seconds=WINDOW, inference=rules) as store:
        await ingest(store, swipe("a", MORNING, action=None))
        [stored] = await ingest(store, swipe("b", MORNING + timedelta(hours=5), action=None))
    assert stored.action is Action.IN


async def test_one_local_day_across_utc_midnight_counts(backend: Backend) -> None:
    """00:30 and 02:00 Berlin are two UTC dates but one shift: the second swipe is `out`."""
    early = datetime(2026, 11, 24, 0, 30, tzinfo=BERLIN)
    later = datetime(2026, 11, 24, 2, 0, tzinfo=BERLIN)
    assert early.astimezone(UTC).date() != later.astimezone(UTC).date()
    async with backend.open(window_seconds=WINDOW) as store:
        await ingest(store, swipe("a", early, action=Action.IN))
        [stored] = await ingest(store, swipe("b", later, action=None))
    assert (stored.action, stored.status) == (Action.OUT, EventStatus.ACCEPTED)
