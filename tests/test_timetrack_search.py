"""TimeTrack: an attendance search answer the bridge cannot read (not a list, a list holding
something else, an entry of the person with no readable start or end) retries, then holds with
the answer shown, masked; it is never read as "nothing there", so nothing is created twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.delivery import Outcome
from bridge.events import Action
from bridge.vendors.timetrack.sink import UNREADABLE_HOLD_ATTEMPT, TimeTrackSink
from bridge.vendors.timetrack.wire import SearchReplyError, find_recent_end, find_same_start
from tests.fakes.timetrack import FakeTimeTrack, running_fake_timetrack
from tests.test_timetrack import (
    API_KEY,
    API_SECRET,
    BERLIN,
    DEFAULT_FIELDS,
    SHIFT,
    Person,
    at,
    make_sink,
    open_state,
)

UNREADABLE = [
    b'{"message": "ok"}',  # no list at all
    b'[{"id": 1}, "tester 2024-07-01T06:00:00"]',  # a list holding something else
    # the very attendance, its times under names the bridge does not know
    (
        b'[{"id": 1, "user": "tester", "start": "2024-07-01T06:00:00.000Z",'
        b' "end": "2024-07-01T14:00:00.000Z"}]'
    ),
]


@pytest.fixture
def fake() -> FakeTimeTrack:
    return FakeTimeTrack(api_key=API_KEY, api_secret=API_SECRET)


@pytest.fixture
async def base_url(fake: FakeTimeTrack) -> AsyncIterator[str]:
    async with running_fake_timetrack(fake) as url:
        yield url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def sink(session: aiohttp.ClientSession, base_url: str) -> TimeTrackSink:
    return make_sink(session, base_url)


def test_an_entry_of_the_person_without_a_readable_time_is_unreadable() -> None:
    args: dict[str, Any] = {"fields": DEFAULT_FIELDS, "mode": "utc", "site_tz": BERLIN}
    renamed = {"id": 1, "user": "tester", "start": "2024-07-01T06:00:00.000Z"}
    with pytest.raises(SearchReplyError):
        find_same_start([renamed], SHIFT, **args)
    with pytest.raises(SearchReplyError):
        find_recent_end([renamed], username="tester", at=at(hours=8), **args)
    other = {"id": 2, "user": "someone", "start": "2024-07-01T06:00:00.000Z"}
    assert find_same_start([other], SHIFT, **args) is None  # someone else's: not in question


@pytest.mark.parametrize("body", UNREADABLE)
async def test_unreadable_search_after_a_lost_create_retries_then_holds(
    sink: TimeTrackSink, fake: FakeTimeTrack, body: bytes
) -> None:
    person = Person(sink, open_state())
    fake.lose_answers = 1
    lost = await person.send(Action.OUT, at(hours=8))
    assert lost.outcome is Outcome.RETRY_LATER
    assert len(fake.live()) == 1  # it landed; the bridge does not know
    fake.list_body = body.replace(b'"id": 1', f'"id": 1, "k": "{API_KEY}"'.encode())
    for attempt in range(2, UNREADABLE_HOLD_ATTEMPT):
        retry = await person.send(Action.OUT, at(hours=8), attempt=attempt)
        assert retry.outcome is Outcome.RETRY_LATER, retry
        assert "unreadable answer" in retry.detail
    held = await person.send(Action.OUT, at(hours=8), attempt=UNREADABLE_HOLD_ATTEMPT)
    assert held.outcome is Outcome.HELD, held
    assert "unreadable answer" in held.detail
    assert body[:8].decode() in held.detail  # the answer is shown ...
    assert API_KEY not in held.detail  # ... masked
    assert person.state.get("unverified") is True  # whoever decides, searches first
    assert len(fake.live()) == 1, "never created a second time"
    assert [r["method"] for r in fake.requests].count("POST") == 1
    fake.list_body = None  # readable again: the retry finds it
    again = await person.send(Action.OUT, at(hours=8), attempt=UNREADABLE_HOLD_ATTEMPT + 1)
    assert again.outcome is Outcome.DUPLICATE
    assert len(fake.live()) == 1


@pytest.mark.parametrize("body", UNREADABLE[:2])
async def test_unreadable_search_for_a_repeated_out_is_not_nothing_there(
    sink: TimeTrackSink, fake: FakeTimeTrack, body: bytes
) -> None:
    person = Person(sink)  # no open shift: is this `out` a resend?
    fake.list_body = body
    result = await person.send(Action.OUT, at(hours=8))
    assert result.outcome is Outcome.RETRY_LATER
    assert "unreadable answer" in result.detail
