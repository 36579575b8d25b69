"""McTime: body mapping, clock-state rules, answer table, rate limiter, and the sink against
the stateful fake (real HTTP on localhost)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from bridge.config import McTimeConfig
from bridge.delivery import Job, Outcome, Result
from bridge.events import Action
from bridge.vendors.common import DETAIL_MAX
from bridge.vendors.mctime.api import Reply, classify_mctime_reply
from bridge.vendors.mctime.rules import (
    Clock,
    Saved,
    Step,
    build_clock_body,
    clock_of_item,
    plan,
    read_state,
    reconcile_refusal,
)
from bridge.vendors.mctime.sink import McTimeSink
from bridge.vendors.ratelimit import RateLimiter
from tests.fakes.mctime import FakeMcTime, running_fake_mctime

API_KEY = "mct-Secret-KEY-4b7e2d9a1c"
HELSINKI = ZoneInfo("Europe/Helsinki")
T0 = datetime(2024, 7, 1, 5, 0, tzinfo=UTC)  # 08:00 in Helsinki (+03:00)

IN, OUT, BS, BE = Action.IN, Action.OUT, Action.BREAK_START, Action.BREAK_END
OFF, RUN, BRK = Clock.OFF, Clock.RUNNING, Clock.ON_BREAK


def make_job(**overrides: object) -> Job:
    fields: dict[str, object] = {
        "delivery_id": 1,
        "event_key": "ev-1",
        "sink": "mctime",
        "person": "u-42",
        "action": Action.IN,
        "time": T0,
        "terminal": "door-1",
        "attempt": 1,
    }
    fields.update(overrides)
    return Job(**fields)  # type: ignore[arg-type]


def make_config(base_url: str = "http://mctime.invalid", **overrides: Any) -> McTimeConfig:
    fields: dict[str, Any] = {"base_url": base_url, "api_key": SecretStr(API_KEY)}
    fields.update(overrides)
    return McTimeConfig(**fields)


def make_sink(session: aiohttp.ClientSession, base_url: str, **overrides: Any) -> McTimeSink:
    return McTimeSink(session=session, config=make_config(base_url, **overrides), site_tz=HELSINKI)


def shift(person: str = "u-42", start: datetime = T0, first_id: int = 1) -> list[Job]:
    steps = [(IN, 0), (BS, 4 * 60), (BE, 4 * 60 + 30), (OUT, 8 * 60 + 30)]
    return [
        make_job(
            delivery_id=first_id + n, person=person, action=a, time=start + timedelta(minutes=m)
        )
        for n, (a, m) in enumerate(steps)
    ]


class Person:
    """Threads the saved state from one send to the next, as the store does."""

    def __init__(self, sink: McTimeSink, state: Mapping[str, Any] | None = None) -> None:
        self.sink = sink
        self.state: Mapping[str, Any] = dict(state or {})

    async def send(self, job: Job) -> Result:
        result = await self.sink.send(dataclasses.replace(job, state=self.state))
        if result.state is not None:
            self.state = result.state
        return result

    async def send_all(self, jobs: Iterable[Job]) -> list[Result]:
        return [await self.send(job) for job in jobs]


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


# -- (a) the request body ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (IN, "start"),
        (OUT, "stop"),
        (BS, "break"),
        (BE, "break"),
    ],
)
def test_action_mapping(action: Action, expected: str) -> None:
    body = build_clock_body(make_job(action=action), site_tz=HELSINKI, config=make_config())
    assert body["action"] == expected
    assert body["userId"] == "u-42"


def test_start_body_is_complete() -> None:
    config = make_config(time_type="home_office", organization_id="org-1")
    body = build_clock_body(make_job(note="gate 3"), site_tz=HELSINKI, config=config)
    assert body == {
        "action": "start",
        "dateTime": "2024-07-01T08:00:00+03:00",
        "userId": "u-42",
        "timeType": "home_office",
        "organizationId": "org-1",
        "comment": "gate 3",
    }


@pytest.mark.parametrize("action", [OUT, BS, BE])
def test_break_and_stop_bodies_are_minimal(action: Action) -> None:
    body = build_clock_body(
        make_job(action=action), site_tz=HELSINKI, config=make_config(organization_id="org-1")
    )
    assert set(body) == {"action", "dateTime", "userId"}


@pytest.mark.parametrize(
    ("utc", "zone", "text"),
    [
        (datetime(2024, 7, 1, 5, 0, tzinfo=UTC), HELSINKI, "2024-07-01T08:00:00+03:00"),
        (datetime(2024, 1, 15, 6, 0, 5, tzinfo=UTC), HELSINKI, "2024-01-15T08:00:05+02:00"),
        # the autumn hour repeats in wall-clock time, the offset keeps the instants apart
        (datetime(2024, 10, 27, 0, 30, tzinfo=UTC), HELSINKI, "2024-10-27T03:30:00+03:00"),
        (datetime(2024, 10, 27, 1, 30, tzinfo=UTC), HELSINKI, "2024-10-27T03:30:00+02:00"),
        (
            datetime(2024, 3, 31, 23, 30, tzinfo=UTC),
            ZoneInfo("Asia/Kolkata"),
            "2024-04-01T05:00:00+05:30",
        ),
        (
            datetime(2024, 9, 1, 8, 0, 0, 999_999, tzinfo=UTC),
            ZoneInfo("UTC"),
            "2024-09-01T08:00:00+00:00",
        ),
        (
            datetime(2024, 1, 15, 3, 0, tzinfo=ZoneInfo("America/New_York")),
            HELSINKI,
            "2024-01-15T10:00:00+02:00",
        ),
    ],
)
def test_datetime_has_the_site_offset(utc: datetime, zone: ZoneInfo, text: str) -> None:
    body = build_clock_body(make_job(time=utc), site_tz=zone, config=make_config())
    assert body["dateTime"] == text


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        build_clock_body(
            make_job(time=datetime(2024, 7, 1, 8)), site_tz=HELSINKI, config=make_config()
        )


@pytest.mark.parametrize(
    ("overrides", "fields"),
    [
        ({}, {}),
        ({"organization_id": "o1"}, {"organizationId": "o1"}),
        ({"organization_name": "Shop"}, {"organizationName": "Shop"}),
        ({"organization_id": "o1", "organization_name": "Shop"}, {"organizationId": "o1"}),
        ({"organization_id": "o1", "organization_form": "nested"}, {"organization": {"id": "o1"}}),
        (
            {"organization_name": "Shop", "organization_form": "nested"},
            {"organization": {"name": "Shop"}},
        ),
    ],
)
def test_organization_forms(overrides: dict[str, str], fields: dict[str, Any]) -> None:
    body = build_clock_body(make_job(), site_tz=HELSINKI, config=make_config(**overrides))
    org = {k: v for k, v in body.items() if k.startswith("organization")}
    assert org == fields


# -- (b) clock-state rules ---------------------------------------------------------------------

PLAN_TABLE = [
    # clock, action, verified, step, reason text
    (None, IN, False, Step.SEND, ""),
    (OFF, IN, False, Step.SEND, ""),
    (RUN, IN, False, Step.DUPLICATE, "in while already clocked in"),
    (BRK, IN, False, Step.DUPLICATE, "in while on break"),
    (None, OUT, False, Step.SEND, ""),
    (RUN, OUT, False, Step.SEND, ""),
    (BRK, OUT, False, Step.SEND, ""),
    (OFF, OUT, False, Step.DUPLICATE, "out while not clocked in"),
    (RUN, BS, False, Step.SEND, ""),
    (BRK, BS, False, Step.DUPLICATE, "break_start while already on break"),
    (None, BS, False, Step.VERIFY, ""),
    (OFF, BS, False, Step.VERIFY, ""),
    (OFF, BS, True, Step.DEAD, "no running clock"),
    (BRK, BE, False, Step.SEND, ""),
    (RUN, BE, False, Step.DUPLICATE, "break_end while not on break"),
    (OFF, BE, False, Step.DUPLICATE, "not on break"),
    (None, BE, False, Step.VERIFY, ""),
]


@pytest.mark.parametrize(("clock", "action", "verified", "step", "text"), PLAN_TABLE)
def test_plan(clock: Clock | None, action: Action, verified: bool, step: Step, text: str) -> None:
    decision = plan(clock, action, verified=verified)
    assert decision.step is step
    assert text in decision.reason


def test_plan_never_verifies_a_verified_clock() -> None:
    for clock in Clock:
        for action in Action:
            assert plan(clock, action, verified=True).step is not Step.VERIFY


@pytest.mark.parametrize(
    ("state", "saved"),
    [
        ({}, Saved(None)),
        ({"clock": "running"}, Saved(RUN)),
        ({"clock": "on_break"}, Saved(BRK)),
        ({"clock": "off"}, Saved(OFF)),
        ({"clock": "sideways"}, Saved(None)),
        ({"clock": "running", "unverified": "break_start", "delivery": 7}, Saved(RUN, BS, 7)),
        ({"unverified": "in", "delivery": 7}, Saved(None, IN, 7)),
        ({"clock": "running", "unverified": "bogus"}, Saved(None, IN, None)),
    ],
)
def test_read_state(state: dict[str, Any], saved: Saved) -> None:
    assert read_state(state) == saved


RECONCILE_TABLE = [
    # action refused, server clock, outcome, text
    (IN, RUN, Outcome.DUPLICATE, "already shows running"),
    (IN, BRK, Outcome.PERMANENT_FAILURE, "clock is on_break"),
    (IN, OFF, Outcome.PERMANENT_FAILURE, "refused in"),
    (OUT, OFF, Outcome.PERMANENT_FAILURE, "no running clock"),
    (OUT, RUN, Outcome.PERMANENT_FAILURE, "clock is running"),
    (BS, OFF, Outcome.PERMANENT_FAILURE, "no running clock"),
    (BS, BRK, Outcome.DUPLICATE, "already shows on_break"),
    (BE, OFF, Outcome.PERMANENT_FAILURE, "no running clock"),
    (BE, RUN, Outcome.DUPLICATE, "already shows running"),
]


@pytest.mark.parametrize(("action", "server", "outcome", "text"), RECONCILE_TABLE)
def test_reconcile_refusal(action: Action, server: Clock, outcome: Outcome, text: str) -> None:
    result = reconcile_refusal(action, server, "McTime 400: nope")
    assert result.outcome is outcome
    assert text in result.detail
    assert "nope" in result.detail
    assert result.state == {"clock": server.value}  # always corrected to what the server shows


@pytest.mark.parametrize(
    ("data", "clock"),
    [
        ({"userId": "a", "onBreak": True}, BRK),
        ({"userId": "a", "onBreak": False, "breaks": [{"from": "x", "to": None}]}, RUN),
        ({"userId": "a", "breaks": [{"from": "x", "to": None}]}, BRK),
        ({"userId": "a", "breaks": [{"from": "x", "to": "y"}]}, RUN),
        ({"userId": "a"}, RUN),
    ],
)
def test_clock_of_item(data: dict[str, Any], clock: Clock) -> None:
    assert clock_of_item(data) is clock


# -- (c) answers -------------------------------------------------------------------------------


def _body(*messages: str, valid: bool = True) -> bytes:
    return json.dumps({"items": [{"message": m} for m in messages], "valid": valid}).encode()


CLASSIFY_TABLE = [
    # status, body, Retry-After, reply, detail text, retry_after
    (200, _body("Success"), None, Reply.APPLIED, "Success", None),
    (
        201,
        _body("Entry was trimmed"),
        None,
        Reply.APPLIED,
        "overwritten or trimmed: Entry was trimmed",
        None,
    ),
    (200, _body("Already running", valid=False), None, Reply.REFUSED, "valid: false", None),
    (
        400,
        _body("User already has a running clock", valid=False),
        None,
        Reply.REFUSED,
        "already has",
        None,
    ),
    (
        404,
        _body("No running clock", valid=False),
        None,
        Reply.REFUSED,
        "404: No running clock",
        None,
    ),
    (
        400,
        _body("Invalid timeType", "Invalid dateTime", valid=False),
        None,
        Reply.REFUSED,
        "timeType; Invalid dateTime",
        None,
    ),
    (400, b"<html>Bad Request</html>", None, Reply.REFUSED, "400: <html>Bad", None),
    (401, _body("Unauthorized", valid=False), None, Reply.PAUSED, "API key refused", None),
    (403, b"", None, Reply.PAUSED, "403", None),
    (302, b"", None, Reply.PAUSED, "base_url", None),
    (
        429,
        _body("Too many requests", valid=False),
        "1",
        Reply.NOT_APPLIED,
        "Too many requests",
        1.0,
    ),
    (429, b"", None, Reply.NOT_APPLIED, "429", None),
    (503, b"Service Unavailable", None, Reply.NOT_APPLIED, "503", None),
    (504, b"Gateway Timeout", None, Reply.AMBIGUOUS, "504", None),
    (500, b"", None, Reply.AMBIGUOUS, "500", None),
    (200, b"<html>maintenance</html>", None, Reply.AMBIGUOUS, "unreadable", None),
    (200, b"[]", None, Reply.AMBIGUOUS, "unreadable", None),
]


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "reply", "text", "delay"),
    CLASSIFY_TABLE,
    ids=[f"{row[0]}-{row[1][:30]!r}" for row in CLASSIFY_TABLE],
)
def test_classify_mctime_reply(
    status: int, body: bytes, retry_after: str | None, reply: Reply, text: str, delay: float | None
) -> None:
    answer = classify_mctime_reply(status, body, retry_after)
    assert answer.reply is reply, answer
    assert text in answer.detail
    assert answer.retry_after == delay
    assert len(answer.detail) <= DETAIL_MAX


@pytest.mark.parametrize("status", [200, 201, 400, 404, 503])
def test_details_stay_short(status: int) -> None:
    for body in (_body("x" * 5000, valid=False), b"y" * 5000, _body(*["z" * 100] * 50)):
        assert len(classify_mctime_reply(status, body, None).detail) <= DETAIL_MAX


# -- (d) the rate limiter ----------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def most_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


async def test_limiter_never_exceeds_the_limit_in_any_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, 1.0, clock=clock, sleep=clock.sleep)
    grants: list[float] = []

    async def worker(n: int) -> None:
        for _ in range(n):
            (await limiter.acquire()).done()
            grants.append(clock())

    await asyncio.gather(*(worker(7) for _ in range(5)))  # 35 requests from 5 workers
    assert len(grants) == 35
    assert most_in_window(grants) == 10
    assert grants[:10] == [1000.0] * 10  # a full window goes at once, then the rest waits
    assert clock.now == pytest.approx(1003.0)  # 35 grants need windows at 0, 1, 2, 3 s
    assert all(s > 0 for s in clock.sleeps)  # sleeps exactly until a slot frees: no polling
    assert len(clock.sleeps) <= 25


async def test_limiter_hold_delays_every_grant() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, 1.0, clock=clock, sleep=clock.sleep)
    limiter.hold(2.5)
    await limiter.acquire()
    assert clock.now == pytest.approx(1002.5)


async def test_cancelled_waiter_takes_no_slot() -> None:
    limiter = RateLimiter(1, 0.2)
    (await limiter.acquire()).done()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    loop = asyncio.get_running_loop()
    started = loop.time()
    await limiter.acquire()  # the next slot is ours, 0.2 s after the first request ended
    assert loop.time() - started < 0.25


@pytest.mark.parametrize(
    ("rate", "limit", "period"),
    [(10, 10, 1.0), (10.7, 10, 1.0), (2.5, 2, 1.0), (1, 1, 1.0), (0.5, 1, 2.0)],
)
def test_limiter_per_second(rate: float, limit: int, period: float) -> None:
    limiter = RateLimiter.per_second(rate)
    assert (limiter.limit, limiter.period) == (limit, period)


# -- (e) the sink against the fake ------------------------------------------------------------


async def test_full_shift_makes_one_entry_with_one_break(
    sink: McTimeSink, fake: FakeMcTime
) -> None:
    person = Person(sink)
    results = await person.send_all(shift())
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 4
    assert [r.state for r in results] == [
        {"clock": "running"},
        {"clock": "on_break"},
        {"clock": "running"},
        {"clock": "off"},
    ]
    [entry] = fake.entries
    assert entry["userId"] == "u-42"
    assert entry["from"].isoformat() == "2024-07-01T08:00:00+03:00"
    assert entry["to"].isoformat() == "2024-07-01T16:30:00+03:00"
    assert [
        (b["from"].hour, b["from"].minute, b["to"].hour, b["to"].minute) for b in entry["breaks"]
    ] == [(12, 0, 12, 30)]
    assert [r["body"]["action"] for r in fake.posts()] == ["start", "break", "break", "stop"]
    assert fake.gets() == []  # the bridge's state sufficed: no reads
    assert fake.clocks == {}


async def test_every_message_twice_still_one_entry_and_one_break(
    sink: McTimeSink, fake: FakeMcTime
) -> None:
    person = Person(sink)
    jobs = [job for job in shift() for _ in range(2)]
    results = await person.send_all(jobs)
    assert [r.outcome for r in results] == [Outcome.DELIVERED, Outcome.DUPLICATE] * 4
    assert "in while already clocked in" in results[1].detail
    assert "break_start while already on break" in results[3].detail
    assert "break_end while not on break" in results[5].detail
    assert "out while not clocked in" in results[7].detail
    [entry] = fake.entries
    assert len(entry["breaks"]) == 1
    assert len(fake.posts()) == 4  # duplicates never reach McTime


async def test_start_while_running_is_reconciled_to_duplicate(
    sink: McTimeSink, fake: FakeMcTime
) -> None:
    await Person(sink).send(make_job())  # McTime has a running clock, the bridge forgot it
    fake.requests.clear()
    person = Person(sink, state={})
    result = await person.send(make_job(delivery_id=2, time=T0 + timedelta(minutes=5)))
    assert result.outcome is Outcome.DUPLICATE
    assert "already shows running" in result.detail
    assert "User already has a running clock" in result.detail
    assert result.state == {"clock": "running"}
    assert [(r["method"], r["answer"]) for r in fake.requests] == [("POST", 400), ("GET", 200)]


async def test_stop_without_a_clock_is_dead_with_a_reason(
    sink: McTimeSink, fake: FakeMcTime
) -> None:
    person = Person(sink, state={"clock": "running"})  # the bridge thinks so; McTime has none
    result = await person.send(make_job(action=OUT))
    assert result.outcome is Outcome.PERMANENT_FAILURE
    assert "out refused: McTime shows no running clock" in result.detail
    assert "404: No running clock" in result.detail
    assert result.state == {"clock": "off"}
    assert fake.entries == []


async def test_break_with_unknown_state_reads_the_clock_first(
    sink: McTimeSink, fake: FakeMcTime
) -> None:
    await Person(sink).send_all(shift()[:2])  # McTime: on a break; the bridge lost the state
    fake.requests.clear()
    result = await Person(sink, state={}).send(shift()[1])
    assert result.outcome is Outcome.DUPLICATE
    assert result.state == {"clock": "on_break"}
    assert [r["method"] for r in fake.requests] == ["GET"]  # a blind break would end it
    assert fake.clock_state("u-42") == "on_break"


async def test_break_start_without_a_clock_is_dead(sink: McTimeSink, fake: FakeMcTime) -> None:
    result = await Person(sink, state={"clock": "off"}).send(make_job(action=BS))
    assert result.outcome is Outcome.PERMANENT_FAILURE
    assert "no running clock" in result.detail
    assert fake.posts() == []


async def test_other_refusal_is_dead_with_the_vendor_message(
    session: aiohttp.ClientSession, base_url: str, fake: FakeMcTime
) -> None:
    sink = make_sink(session, base_url, time_type="overtime")
    result = await Person(sink).send(make_job())
    assert result.outcome is Outcome.PERMANENT_FAILURE
    assert "Invalid timeType 'overtime'" in result.detail
    assert result.state == {"clock": "off"}


async def test_lost_break_answer_is_resolved_without_a_second_break(
    sink: McTimeSink, fake: FakeMcTime
) -> None:
    person = Person(sink)
    jobs = shift()
    await person.send(jobs[0])
    fake.lose_answers = 1
    lost = await person.send(jobs[1])
    assert lost.outcome is Outcome.RETRY_LATER
    assert "ServerDisconnectedError" in lost.detail
    assert lost.state == {"clock": "running", "unverified": "break_start", "delivery": 2}
    assert len(fake.posts("break")) == 1  # aiohttp does not resend a POST by itself
    assert fake.clock_state("u-42") == "on_break"

    again = await person.send(jobs[1])  # the same delivery, retried
    assert again.outcome is Outcome.DUPLICATE
    assert "earlier answer was lost" in again.detail
    assert again.state == {"clock": "on_break"}
    assert len(fake.posts("break")) == 1  # no second, break-ending toggle
    assert [r.outcome for r in await person.send_all(jobs[2:])] == [Outcome.DELIVERED] * 2
    [entry] = fake.entries
    assert len(entry["breaks"]) == 1


async def test_lost_request_is_resent_after_the_check(sink: McTimeSink, fake: FakeMcTime) -> None:
    person = Person(sink)
    jobs = shift()
    await person.send(jobs[0])
    fake.lose_requests = 1  # dropped before McTime applied it
    assert (await person.send(jobs[1])).outcome is Outcome.RETRY_LATER
    assert fake.clock_state("u-42") == "running"
    result = await person.send(jobs[1])
    assert result.outcome is Outcome.DELIVERED
    assert result.state == {"clock": "on_break"}
    assert [r["method"] for r in fake.requests[-2:]] == ["GET", "POST"]


async def test_lost_start_answer_then_duplicate(sink: McTimeSink, fake: FakeMcTime) -> None:
    fake.lose_answers = 1
    person = Person(sink)
    assert (await person.send(make_job())).outcome is Outcome.RETRY_LATER
    assert person.state == {"unverified": "in", "delivery": 1}
    result = await person.send(make_job())
    assert result.outcome is Outcome.DUPLICATE
    assert len(fake.posts("start")) == 1


async def test_unverified_marker_of_another_delivery_uses_the_server_clock(
    sink: McTimeSink, fake: FakeMcTime
) -> None:
    # delivery 1 (in) was lost and later dropped by an operator; delivery 2 is a break_start
    await Person(sink).send(make_job())
    person = Person(sink, state={"clock": "off", "unverified": "in", "delivery": 1})
    result = await person.send(make_job(delivery_id=2, action=BS, time=T0 + timedelta(hours=1)))
    assert result.outcome is Outcome.DELIVERED
    assert result.state == {"clock": "on_break"}


async def test_wrong_key_pauses(
    session: aiohttp.ClientSession, base_url: str, fake: FakeMcTime
) -> None:
    sink = McTimeSink(
        session=session,
        config=make_config(base_url, api_key=SecretStr("Wrong-Key-9f8e7d")),
        site_tz=HELSINKI,
    )
    result = await sink.send(make_job())
    assert result.outcome is Outcome.PAUSED
    assert "401" in result.detail
    assert "Wrong-Key" not in result.detail
    assert fake.clocks == {}


async def test_503_retries_and_nothing_is_marked(sink: McTimeSink, fake: FakeMcTime) -> None:
    fake.fail_503 = 1
    person = Person(sink)
    result = await person.send(make_job())
    assert result.outcome is Outcome.RETRY_LATER
    assert "503" in result.detail
    assert result.state is None
    assert (await person.send(make_job())).outcome is Outcome.DELIVERED
    assert fake.gets() == []


async def test_504_retries_and_the_retry_is_checked(sink: McTimeSink, fake: FakeMcTime) -> None:
    fake.fail_504 = 1  # McTime applied it, the gateway gave up waiting
    person = Person(sink)
    result = await person.send(make_job())
    assert result.outcome is Outcome.RETRY_LATER
    assert "504" in result.detail
    assert result.state == {"unverified": "in", "delivery": 1}
    assert (await person.send(make_job())).outcome is Outcome.DUPLICATE
    assert len(fake.posts()) == 1


async def test_timeout_retries_and_the_retry_is_checked(
    session: aiohttp.ClientSession, base_url: str, fake: FakeMcTime
) -> None:
    person = Person(make_sink(session, base_url, timeout_seconds=0.2))
    await person.send(make_job())
    fake.delay_seconds = 1.0
    result = await person.send(make_job(delivery_id=2, action=BS, time=T0 + timedelta(hours=1)))
    assert result.outcome is Outcome.RETRY_LATER
    assert "TimeoutError" in result.detail
    assert result.state == {"clock": "running", "unverified": "break_start", "delivery": 2}
    fake.delay_seconds = 0
    await fake.wait_until(lambda: fake.clock_state("u-42") == "on_break")  # the slow one landed
    again = await person.send(make_job(delivery_id=2, action=BS, time=T0 + timedelta(hours=1)))
    assert again.outcome is Outcome.DUPLICATE
    assert len(fake.posts("break")) == 1


async def test_connection_refused_retries_unmarked(session: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await make_sink(session, f"http://127.0.0.1:{port}").send(make_job())
    assert result.outcome is Outcome.RETRY_LATER
    assert "ClientConnectorError" in result.detail
    assert result.state is None  # it never left: nothing to verify


async def test_429_retries_after_the_given_delay(sink: McTimeSink, fake: FakeMcTime) -> None:
    fake.rate_limit = 0  # every request is over the limit
    result = await sink.send(make_job())
    assert result.outcome is Outcome.RETRY_LATER
    assert result.retry_after == 1.0
    assert "Too many requests" in result.detail
    assert fake.clocks == {}
    fake.rate_limit = 10
    assert (await sink.send(make_job())).outcome is Outcome.DELIVERED  # after the 1 s hold


async def test_get_clock_failure_keeps_the_marker(sink: McTimeSink, fake: FakeMcTime) -> None:
    state = {"clock": "running", "unverified": "break_start", "delivery": 1}
    fake.fail_503 = 1
    result = await sink.send(make_job(action=BS, state=state))
    assert result.outcome is Outcome.RETRY_LATER
    assert "GET /clock" in result.detail
    assert result.state is None
    assert fake.posts() == []


async def test_get_clock_follows_pages(sink: McTimeSink, fake: FakeMcTime) -> None:
    for n in range(45):  # three pages: 20, 20, 5
        await Person(sink).send(make_job(person=f"p{n:02d}"))
    fake.requests.clear()
    assert await sink.server_clock("p44") is Clock.RUNNING
    assert [r["query"]["page"] for r in fake.gets()] == ["1", "2", "3"]
    fake.requests.clear()
    assert await sink.server_clock("p05") is Clock.RUNNING
    assert len(fake.gets()) == 1
    fake.requests.clear()
    assert await sink.server_clock("nobody") is Clock.OFF
    assert len(fake.gets()) == 3


async def test_overwriting_stop_is_delivered_with_the_warning(
    sink: McTimeSink, fake: FakeMcTime
) -> None:
    await Person(sink).send_all(shift())
    results = await Person(sink).send_all(shift(first_id=10))  # the same shift, again
    assert results[-1].outcome is Outcome.DELIVERED
    assert "McTime 201" in results[-1].detail
    assert "overwritten" in results[-1].detail
    assert results[-1].warn  # the dispatcher logs it as a warning
    assert not results[0].warn
    assert len(fake.entries) == 1


async def test_nested_organization_reaches_the_fake(
    session: aiohttp.ClientSession, base_url: str, fake: FakeMcTime
) -> None:
    sink = make_sink(session, base_url, organization_id="org-9", organization_form="nested")
    await sink.send(make_job())
    assert fake.posts()[0]["body"]["organization"] == {"id": "org-9"}
    assert fake.clocks["u-42"]["organizationId"] == "org-9"


async def test_cancellation_propagates(sink: McTimeSink, fake: FakeMcTime) -> None:
    fake.delay_seconds = 5
    task = asyncio.create_task(sink.send(make_job()))
    await fake.wait_for_requests(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- (f) the rate limit across concurrent sends ------------------------------------------------


async def _burst(sink: McTimeSink, jobs: list[Job], concurrency: int = 8) -> list[Result]:
    slots = asyncio.Semaphore(concurrency)

    async def one(job: Job) -> Result:
        async with slots:
            return await sink.send(job)

    return await asyncio.gather(*(one(job) for job in jobs))


async def test_burst_of_50_people_stays_under_the_limit(sink: McTimeSink, fake: FakeMcTime) -> None:
    jobs = [make_job(delivery_id=n, person=f"p{n:02d}") for n in range(50)]
    results = await _burst(sink, jobs)
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 50
    assert len(fake.requests) == 50
    assert fake.max_requests_in_any_second() <= 10
    assert 429 not in [r["answer"] for r in fake.requests]


async def test_reads_count_toward_the_limit(sink: McTimeSink, fake: FakeMcTime) -> None:
    await _burst(sink, [make_job(delivery_id=n, person=f"p{n:02d}") for n in range(15)])
    # unknown state: each break_start reads GET /clock first, then posts
    jobs = [
        make_job(delivery_id=100 + n, person=f"p{n:02d}", action=BS, time=T0 + timedelta(hours=1))
        for n in range(15)
    ]
    results = await _burst(sink, jobs)
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 15
    assert len(fake.gets()) == 15
    assert fake.max_requests_in_any_second() <= 10


async def test_without_the_limiter_the_fake_refuses_a_burst(
    session: aiohttp.ClientSession, base_url: str, fake: FakeMcTime
) -> None:
    # shows the measurement and the fake's 429 can fail: a sink allowed 1000/s exceeds 10/s
    sink = make_sink(session, base_url, rate_per_second=1000)
    jobs = [make_job(delivery_id=n, person=f"p{n:02d}") for n in range(30)]
    results = await _burst(sink, jobs, concurrency=30)
    assert fake.max_requests_in_any_second() > 10
    assert Outcome.RETRY_LATER in [r.outcome for r in results]
    assert 429 in [r["answer"] for r in fake.requests]


# -- (g) the API key never reaches a detail ----------------------------------------------------


async def _echo_key(request: web.Request) -> web.Response:
    key = request.headers.get("API_KEY", "")
    shape = request.match_info["shape"]
    if shape == "json":
        return web.json_response({"items": [{"message": f"bad {key}"}], "valid": False}, status=400)
    if shape == "long":
        return web.Response(status=400, text="x" * 110 + key)
    if shape == "upper":
        return web.Response(status=404, text=f"no tenant for {key.upper()}")
    if shape == "ok":
        return web.json_response({"items": [{"message": f"hello {key}"}], "valid": True})
    return web.Response(status=200, text=f"<html>hello {key}</html>")


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{shape}/clock", _echo_key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


@pytest.mark.parametrize("shape", ["json", "long", "upper", "ok", "html"])
async def test_api_key_never_in_detail(
    session: aiohttp.ClientSession, echo_url: str, shape: str
) -> None:
    sink = make_sink(session, f"{echo_url}/{shape}")
    for state in ({}, {"clock": "running"}, {"clock": "on_break", "unverified": "break_end"}):
        for action in Action:
            result = await sink.send(make_job(action=action, state=state))
            assert API_KEY.lower()[:8] not in result.detail.lower(), result
            assert len(result.detail) <= DETAIL_MAX
    result = await sink.send(make_job())
    if shape in ("json", "ok"):
        assert "<redacted>" in result.detail
