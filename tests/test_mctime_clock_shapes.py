"""McTime GET /clock read in both plausible shapes (one item per running clock, or one item
whose `data` lists them) and every spelling of the user (userId, user_id, user.id); a reply the
bridge cannot read retries, then holds, and is never taken as "no running clock"."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.delivery import Job, Outcome, Result
from bridge.reconcile.fetch import ReadError
from bridge.vendors.mctime.readback import parse_times
from bridge.vendors.mctime.rules import Clock, ClockReplyError, find_clock
from bridge.vendors.mctime.sink import UNREADABLE_HOLD_ATTEMPT, McTimeSink
from tests.fakes.mctime import FakeMcTime, running_fake_mctime
from tests.test_mctime import API_KEY, Person, make_sink, shift

SHAPES = ["item", "list"]
SPELLINGS = ["userId", "user_id", "user.id"]
PEOPLE = 10


def _clock(user: str, field: str = "userId", **extra: Any) -> dict[str, Any]:
    named: dict[str, Any] = {"user": {"id": user}} if field == "user.id" else {field: user}
    return {**named, "from": "2024-07-01T08:00:00+03:00", **extra}


def _page(shape: str, clocks: list[dict[str, Any]]) -> dict[str, Any]:
    if shape == "list":
        return {"items": [{"message": "Success", "data": clocks}], "valid": True}
    return {"items": [{"message": "Success", "data": c} for c in clocks], "valid": True}


@pytest.fixture
def fake() -> FakeMcTime:
    return FakeMcTime(api_key=API_KEY)


@pytest.fixture
async def base_url(fake: FakeMcTime) -> AsyncIterator[str]:
    async with running_fake_mctime(fake) as url:
        yield url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def sink(session: aiohttp.ClientSession, base_url: str) -> McTimeSink:
    return make_sink(session, base_url)


# -- the pure reader ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("field", SPELLINGS)
def test_find_clock_reads_both_shapes_and_every_spelling(shape: str, field: str) -> None:
    clocks = [_clock("a", field), _clock("u-42", field, onBreak=True), _clock("z", field)]
    found, count, users = find_clock(_page(shape, clocks), "u-42")
    assert (found, users) == (Clock.ON_BREAK, ["a", "u-42", "z"])
    assert count == 3
    assert find_clock(_page(shape, clocks), "nobody")[0] is None


@pytest.mark.parametrize("shape", SHAPES)
def test_a_full_page_in_either_shape_asks_for_the_next(shape: str) -> None:
    clocks = [_clock(f"p{n:02d}") for n in range(20)]
    assert find_clock(_page(shape, clocks), "nobody")[1] == 20


@pytest.mark.parametrize(
    "answer",
    [
        {"items": [{"message": "Success"}], "valid": True},  # no data at all
        {"items": [{"message": "Success", "data": "u-42"}], "valid": True},
        {"items": [{"message": "Success", "data": [None]}], "valid": True},
        {"items": [{"message": "Success", "data": {"employee": "u-42"}}], "valid": True},
        {"items": [{"message": "Success", "data": [{"user": {"name": "Ann"}}]}]},
        {"items": ["u-42"], "valid": True},
        {"items": {"data": []}, "valid": True},
    ],
)
def test_unreadable_pages_raise(answer: dict[str, Any]) -> None:
    with pytest.raises(ClockReplyError):
        find_clock(answer, "u-42")


def test_empty_pages_in_either_shape_are_no_clock() -> None:
    assert find_clock({"items": [], "valid": True}, "u-42") == (None, 0, [])
    assert find_clock(_page("list", []), "u-42") == (None, 1, [])


# -- the sink against the fake, over HTTP ------------------------------------------------------


async def until_settled(person: Person, job: Job, limit: int = 10) -> Result:
    """Send as the store does: a retry is claimed again with the next attempt number."""
    for attempt in range(1, limit + 1):
        result = await person.send(dataclasses.replace(job, attempt=attempt))
        if result.outcome is not Outcome.RETRY_LATER:
            return result
    pytest.fail(f"{job.action} still retrying after {limit} attempts: {result}")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("field", SPELLINGS)
async def test_lost_answer_to_every_break_leaves_no_clock_running(
    session: aiohttp.ClientSession, base_url: str, fake: FakeMcTime, shape: str, field: str
) -> None:
    fake.clock_shape, fake.clock_user_field = shape, field
    sink = make_sink(session, base_url, rate_per_second=1000)
    fake.rate_limit = 10_000
    outcomes: list[Outcome] = []
    for n in range(PEOPLE):
        person = Person(sink)
        for job in shift(f"p{n:02d}", first_id=10 * n + 1):
            if job.action.value.startswith("break"):
                fake.lose_answers = 1
            outcomes.append((await until_settled(person, job)).outcome)
    assert Outcome.PERMANENT_FAILURE not in outcomes
    assert fake.clocks == {}, "no clock left running"
    assert sorted(e["userId"] for e in fake.entries) == [f"p{n:02d}" for n in range(PEOPLE)]
    for entry in fake.entries:
        [closed] = entry["breaks"]
        assert closed["from"] is not None
        assert closed["to"] is not None
    assert len(fake.posts("break")) == 2 * PEOPLE  # no extra toggle
    assert len(fake.posts("stop")) == PEOPLE


UNREADABLE = [
    b"<html>maintenance</html>",
    b'{"items": [{"message": "Success"}], "valid": true}',
    b'{"items": [{"message": "Success", "data": [{"employee": "p00"}]}], "valid": true}',
]


@pytest.mark.parametrize("body", UNREADABLE)
async def test_unreadable_clock_reply_retries_then_holds_never_dead(
    sink: McTimeSink, fake: FakeMcTime, body: bytes
) -> None:
    person = Person(sink)
    jobs = shift("p00")
    assert (await person.send(jobs[0])).outcome is Outcome.DELIVERED
    fake.lose_answers = 1
    assert (await person.send(jobs[1])).outcome is Outcome.RETRY_LATER  # break sent, answer lost
    fake.clock_body = body.replace(b"Success", f"Success {API_KEY}".encode())
    for attempt in range(2, UNREADABLE_HOLD_ATTEMPT):
        result = await person.send(dataclasses.replace(jobs[1], attempt=attempt))
        assert result.outcome is Outcome.RETRY_LATER, result
        assert "unreadable reply" in result.detail
    held = await person.send(dataclasses.replace(jobs[1], attempt=UNREADABLE_HOLD_ATTEMPT))
    assert held.outcome is Outcome.HELD, held
    assert "unreadable reply" in held.detail
    assert body[:12].decode() in held.detail  # the reply is shown ...
    assert API_KEY not in held.detail  # ... masked
    assert person.state["unverified"] == "break_start", "the marker stays for whoever decides"
    # later punches of the person are not guessed either
    for job in jobs[2:]:
        later = await person.send(dataclasses.replace(job, attempt=UNREADABLE_HOLD_ATTEMPT))
        assert later.outcome is Outcome.HELD, later
    assert len(fake.posts("break")) == 1
    assert fake.clock_state("p00") == "on_break"
    fake.clock_body = None  # readable again: the retry finds the break and finishes the day
    assert [(await until_settled(person, job)).outcome for job in jobs[1:]] == [
        Outcome.DUPLICATE,
        Outcome.DELIVERED,
        Outcome.DELIVERED,
    ]
    assert fake.clocks == {}
    [entry] = fake.entries
    assert len(entry["breaks"]) == 1


# -- GET /times for reconcile: the same shapes, and nothing left out unread ---------------------


def _entry(user: str, field: str) -> dict[str, Any]:
    return {
        **_clock(user, field),
        "id": f"e-{user}",
        "to": "2024-07-01T16:30:00+03:00",
        "breaks": [{"from": "2024-07-01T12:00:00+03:00", "to": "2024-07-01T12:30:00+03:00"}],
    }


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("field", SPELLINGS)
def test_times_read_in_both_shapes_and_every_spelling(shape: str, field: str) -> None:
    entries = parse_times(_page(shape, [_entry("a", field), _entry("b", field)]), what="t")
    assert sorted(e.person for e in entries) == ["a", "b"]
    assert all(e.breaks is not None and len(e.breaks) == 1 for e in entries)


@pytest.mark.parametrize(
    "data", [None, "e-1", [None], {"employee": "a", "from": "2024-07-01T08:00:00+03:00"}]
)
def test_unreadable_times_are_a_read_error_not_nothing(data: object) -> None:
    with pytest.raises(ReadError):
        parse_times({"items": [{"message": "Success", "data": data}], "valid": True}, what="t")
