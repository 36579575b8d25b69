"""TimeTrack: the shift state machine, the body, the answer table, and the sink against the fake."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from bridge.config import TimeTrackConfig, TimeTrackFields
from bridge.delivery import Job, Outcome, Result
from bridge.events import Action
from bridge.vendors.common import DETAIL_MAX
from bridge.vendors.timetrack.api import classify_timetrack_reply
from bridge.vendors.timetrack.shift import (
    ShiftStateError,
    closed_attendance,
    complete_shift,
    plan_job,
    start_shift,
)
from bridge.vendors.timetrack.sink import TimeTrackSink
from bridge.vendors.timetrack.wire import (
    Attendance,
    build_attendance_body,
    entries_of,
    find_recent_end,
    find_same_start,
    format_timestamp,
    parse_vendor_time,
)
from tests.fakes.timetrack import EXAMPLE_FIELDS, FakeTimeTrack, running_fake_timetrack

API_KEY = "TT-key-Alpha-9f8e7d6c5b"
API_SECRET = "TT-secret-Omega-1a2b3c4d5e"
BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2024, 7, 1, 6, 0, tzinfo=UTC)  # 08:00 in Berlin (CEST)
MAX = timedelta(hours=16)
DEFAULT_FIELDS = TimeTrackFields()
EXAMPLE = TimeTrackFields.model_validate(
    {"from": "from", "break_minutes": "minutesBreak", "notes": "details"}
)


def at(minutes: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(hours=hours, minutes=minutes)


def make_job(action: Action, time: datetime = T0, **overrides: Any) -> Job:
    fields: dict[str, Any] = {
        "delivery_id": 1,
        "event_key": f"ev-{action}-{time.isoformat()}",
        "sink": "timetrack",
        "person": "tester",
        "action": action,
        "time": time,
        "terminal": "gate-1",
        "attempt": 1,
    }
    fields.update(overrides)
    return Job(**fields)


def open_state(
    start: datetime = T0, *, break_from: datetime | None = None, **extra: Any
) -> dict[str, Any]:
    shift = {
        "from": start.isoformat(),
        "break_minutes": 0,
        "break_from": None if break_from is None else break_from.isoformat(),
        "notes": [],
        **extra,
    }
    return {"shift": shift}


# -- (a) the state machine, pure -------------------------------------------------------------

IN, OUT, BS, BE = Action.IN, Action.OUT, Action.BREAK_START, Action.BREAK_END
D, DUP, HELD = Outcome.DELIVERED, Outcome.DUPLICATE, Outcome.HELD
KEEP = "keep"  # Result.state None: the saved state stays as it was

STATE_TABLE = [
    # name, state before, action, time, outcome, state after (or KEEP), text in detail
    (
        "in opens",
        {},
        IN,
        T0,
        D,
        {
            "shift": {
                "from": "2024-07-01T06:00:00+00:00",
                "break_minutes": 0,
                "break_from": None,
                "notes": [],
            }
        },
        "shift opened",
    ),
    ("in twice", open_state(), IN, T0, DUP, KEEP, "swiped in twice"),
    ("in again 1h later", open_state(), IN, at(hours=1), DUP, KEEP, "already open"),
    ("in at max is duplicate", open_state(), IN, at(hours=16), DUP, KEEP, "already open"),
    ("in past max", open_state(), IN, at(hours=16, minutes=1), HELD, KEEP, "max shift"),
    ("in before shift", open_state(), IN, at(minutes=-5), HELD, KEEP, "earlier than"),
    (
        "break starts",
        open_state(),
        BS,
        at(hours=3),
        D,
        open_state(break_from=at(hours=3)),
        "break started",
    ),
    (
        "break start twice",
        open_state(break_from=at(hours=3)),
        BS,
        at(hours=3),
        DUP,
        KEEP,
        "already started",
    ),
    (
        "break ends",
        open_state(break_from=at(hours=3)),
        BE,
        at(hours=3, minutes=15),
        D,
        {
            "shift": {
                **open_state()["shift"],
                "break_minutes": 15,
                "breaks": [["2024-07-01T09:00:00+00:00", "2024-07-01T09:15:00+00:00"]],
            }
        },
        "15 min",
    ),
    (
        "break end twice",
        {
            "shift": {
                **open_state()["shift"],
                "break_minutes": 15,
                "breaks": [["2024-07-01T09:00:00+00:00", "2024-07-01T09:15:00+00:00"]],
            }
        },
        BE,
        at(hours=3, minutes=15),
        DUP,
        KEEP,
        "already ended",
    ),
    ("break end, no start", open_state(), BE, at(hours=3), D, KEEP, "ignored"),
    ("break start, no shift", {}, BS, T0, D, KEEP, "ignored: break_start"),
    ("break end, no shift", {}, BE, T0, D, KEEP, "ignored: break_end"),
    ("break in a stale shift", open_state(), BS, at(hours=20), D, KEEP, "does not fit"),
    ("out past max", open_state(), OUT, at(hours=16, minutes=1), HELD, KEEP, "max shift"),
    ("out at the in's time", open_state(), OUT, T0, HELD, KEEP, "not after"),
]


@pytest.mark.parametrize(
    ("state", "action", "time", "outcome", "after", "text"),
    [row[1:] for row in STATE_TABLE],
    ids=[row[0] for row in STATE_TABLE],
)
def test_state_machine_without_requests(
    state: dict[str, Any],
    action: Action,
    time: datetime,
    outcome: Outcome,
    after: Any,
    text: str,
) -> None:
    plan = plan_job(state, make_job(action, time), max_shift=MAX)
    assert plan.attendance is None
    assert not plan.find_repeat_out
    assert plan.result is not None
    assert plan.result.outcome is outcome, plan.result
    assert text in plan.result.detail
    if after == KEEP:
        assert plan.result.state is None
    else:
        assert plan.result.state == after


OUT_TABLE = [
    # name, state, out time, note, (from, to, break minutes, notes)
    ("plain", open_state(), at(hours=8), None, (T0, at(hours=8), 0, ())),
    (
        "break and notes",
        {
            "shift": {
                **open_state()["shift"],
                "notes": ["gate A"],
                "breaks": [["2024-07-01T09:00:00+00:00", "2024-07-01T09:15:00+00:00"]],
            }
        },
        at(hours=8),
        "bye",
        (T0, at(hours=8), 15, ("gate A", "bye")),
    ),
    (
        "open break closes at out",
        open_state(break_from=at(hours=7, minutes=40)),
        at(hours=8),
        None,
        (T0, at(hours=8), 20, ()),
    ),
    ("exactly max", open_state(), at(hours=16), None, (T0, at(hours=16), 0, ())),
    (
        "operator start ignores max",
        open_state(operator=True),
        at(hours=30),
        None,
        (T0, at(hours=30), 0, ()),
    ),
]


@pytest.mark.parametrize(
    ("state", "time", "note", "expected"),
    [row[1:] for row in OUT_TABLE],
    ids=[row[0] for row in OUT_TABLE],
)
def test_out_closes_the_shift(
    state: dict[str, Any], time: datetime, note: str | None, expected: tuple[Any, ...]
) -> None:
    plan = plan_job(state, make_job(OUT, time, note=note), max_shift=MAX)
    assert plan.result is None
    assert plan.attendance == Attendance("tester", *expected)
    assert plan.after == {}


def test_out_without_shift_asks_for_a_search() -> None:
    plan = plan_job({}, make_job(OUT, at(hours=8)), max_shift=MAX)
    assert plan.find_repeat_out
    assert plan.result is None
    assert plan.attendance is None


def test_notes_collect_from_in_and_breaks() -> None:
    state: Mapping[str, Any] = {}
    for action, time, note in [
        (IN, T0, "early"),
        (BS, at(hours=2), "coffee"),
        (BE, at(hours=2, minutes=7), None),
        (BS, at(hours=4), None),
        (BE, at(hours=4, minutes=8), "back"),
    ]:
        result = plan_job(state, make_job(action, time, note=note), max_shift=MAX).result
        assert result is not None
        assert result.state is not None
        state = result.state
    plan = plan_job(state, make_job(OUT, at(hours=8)), max_shift=MAX)
    assert plan.attendance is not None
    assert plan.attendance.notes == ("early", "coffee", "back")
    assert plan.attendance.break_minutes == 15  # 7 + 8


def test_break_minutes_round_once_over_the_sum() -> None:
    # two breaks of 7:20 each: 14:40 in total is 15 minutes (7 + 7 if rounded each time)
    breaks = [
        [at(hours=2).isoformat(), at(hours=2, minutes=7 + 1 / 3).isoformat()],
        [at(hours=4).isoformat(), at(hours=4, minutes=7 + 1 / 3).isoformat()],
    ]
    state = {"shift": {**open_state()["shift"], "breaks": breaks}}
    plan = plan_job(state, make_job(OUT, at(hours=8)), max_shift=MAX)
    assert plan.attendance is not None
    assert plan.attendance.break_minutes == 15


@pytest.mark.parametrize(
    "state",
    [
        {"shift": "yes"},
        {"shift": {"from": "yesterday"}},
        {"shift": {"from": "2024-07-01T06:00:00"}},  # naive
        {"shift": {"from": T0.isoformat(), "notes": "x"}},
        {"shift": {"from": T0.isoformat(), "breaks": [["a"]]}},
    ],
)
def test_unreadable_state_raises(state: dict[str, Any]) -> None:
    with pytest.raises(ShiftStateError):
        plan_job(state, make_job(IN), max_shift=MAX)


def test_complete_shift() -> None:
    state = open_state(break_from=at(hours=7, minutes=50))
    closed = complete_shift(state, to=at(hours=8))
    assert closed["shift"]["to"] == "2024-07-01T14:00:00+00:00"
    assert closed["shift"]["break_from"] is None
    assert closed["shift"]["break_minutes"] == 10
    assert closed_attendance(closed, username="tester") == Attendance(
        "tester", T0, at(hours=8), 10, ()
    )
    assert closed_attendance(state, username="tester") is None
    assert complete_shift({**state, "unverified": True}, to=at(hours=8))["unverified"] is True
    with pytest.raises(ShiftStateError, match="no open shift"):
        complete_shift({}, to=at(hours=8))
    with pytest.raises(ShiftStateError, match="not after"):
        complete_shift(state, to=T0)
    with pytest.raises(ShiftStateError, match="naive"):
        complete_shift(state, to=datetime(2024, 7, 1, 14, 0))


def test_start_shift() -> None:
    state = start_shift({}, from_=T0, note="forgot my badge")
    assert state == {
        "shift": {
            "from": "2024-07-01T06:00:00+00:00",
            "break_minutes": 0,
            "break_from": None,
            "notes": ["forgot my badge"],
            "operator": True,
        }
    }
    with pytest.raises(ShiftStateError, match="already open"):
        start_shift(open_state(), from_=T0)


# -- (b) timestamps and the body, pure --------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "mode", "zone", "text"),
    [
        (T0, "utc", BERLIN, "2024-07-01T06:00:00.000Z"),
        (T0, "local", BERLIN, "2024-07-01T08:00:00.000Z"),  # CEST +2, still written with Z
        (datetime(2024, 1, 15, 7, 0, 5, tzinfo=UTC), "local", BERLIN, "2024-01-15T08:00:05.000Z"),
        (
            datetime(2024, 1, 15, 7, 0, 5, 999_999, tzinfo=UTC),
            "utc",
            BERLIN,
            "2024-01-15T07:00:05.000Z",
        ),
        (
            datetime(2024, 3, 31, 23, 30, tzinfo=UTC),
            "local",
            ZoneInfo("Asia/Tokyo"),
            "2024-04-01T08:30:00.000Z",
        ),
        (
            datetime(2024, 1, 15, 3, 0, tzinfo=ZoneInfo("America/New_York")),
            "utc",
            BERLIN,
            "2024-01-15T08:00:00.000Z",
        ),
    ],
)
def test_format_timestamp(moment: datetime, mode: Any, zone: ZoneInfo, text: str) -> None:
    assert format_timestamp(moment, mode=mode, site_tz=zone) == text


def test_format_timestamp_refuses_naive() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_timestamp(datetime(2024, 7, 1, 6, 0), mode="utc", site_tz=BERLIN)


SHIFT = Attendance("tester", T0, at(hours=8), 15, ("gate A", "bye"))


@pytest.mark.parametrize(
    ("fields", "mode", "expected"),
    [
        (
            DEFAULT_FIELDS,
            "utc",
            {
                "username": "tester",
                "from": "2024-07-01T06:00:00.000Z",
                "to": "2024-07-01T14:00:00.000Z",
                "breakMinutes": 15,
                "notes": "gate A; bye",
            },
        ),
        (
            EXAMPLE,
            "local",
            {
                "username": "tester",
                "from": "2024-07-01T08:00:00.000Z",
                "to": "2024-07-01T16:00:00.000Z",
                "minutesBreak": 15,
                "details": "gate A; bye",
            },
        ),
        (
            EXAMPLE,
            "utc",
            {
                "username": "tester",
                "from": "2024-07-01T06:00:00.000Z",
                "to": "2024-07-01T14:00:00.000Z",
                "minutesBreak": 15,
                "details": "gate A; bye",
            },
        ),
    ],
)
def test_attendance_body(fields: TimeTrackFields, mode: Any, expected: dict[str, Any]) -> None:
    assert build_attendance_body(SHIFT, fields=fields, mode=mode, site_tz=BERLIN) == expected


def test_body_omits_empty_notes_but_sends_zero_break() -> None:
    body = build_attendance_body(
        Attendance("tester", T0, at(hours=8), 0), fields=DEFAULT_FIELDS, mode="utc", site_tz=BERLIN
    )
    assert body == {
        "username": "tester",
        "from": "2024-07-01T06:00:00.000Z",
        "to": "2024-07-01T14:00:00.000Z",
        "breakMinutes": 0,
    }


@pytest.mark.parametrize(
    ("text", "mode", "expected"),
    [
        ("2024-07-01T06:00:00.000Z", "utc", datetime(2024, 7, 1, 6, 0)),
        ("2024-07-01T06:00:00Z", "utc", datetime(2024, 7, 1, 6, 0)),
        ("2024-07-01 06:00:00", "utc", datetime(2024, 7, 1, 6, 0)),
        ("2024-07-01T08:00:00+02:00", "utc", datetime(2024, 7, 1, 6, 0)),
        ("2024-07-01T06:00:00+00:00", "local", datetime(2024, 7, 1, 8, 0)),
        ("2024-07-01", "utc", None),
        ("2024-02-30T06:00:00Z", "utc", None),
        (17, "utc", None),
    ],
)
def test_parse_vendor_time(text: object, mode: Any, expected: datetime | None) -> None:
    assert parse_vendor_time(text, mode=mode, site_tz=BERLIN) == expected


def test_matching_entries() -> None:
    args: dict[str, Any] = {"fields": DEFAULT_FIELDS, "mode": "utc", "site_tz": BERLIN}
    other_user = {"id": 1, "user": "someone", "from": "2024-07-01T06:00:00.000Z"}
    other_start = {"id": 2, "user": "tester", "from": "2024-07-01T06:00:01.000Z"}
    same = {"id": 3, "user": "tester", "from": "2024-07-01T06:00:00.000Z", "to": "x"}
    assert find_same_start([other_user, other_start], SHIFT, **args) is None
    assert find_same_start([other_user, other_start, same], SHIFT, **args) == same
    no_user = {"id": 4, "from": "2024-07-01T06:00:00.000Z"}  # trust the server's filter
    assert find_same_start([no_user], SHIFT, **args) == no_user

    ended = {"id": 5, "user": "tester", "to": "2024-07-01T14:00:00.000Z"}
    assert find_recent_end([ended], username="tester", at=at(hours=8), **args) == ended
    assert find_recent_end([ended], username="tester", at=at(hours=8, minutes=5), **args)
    assert find_recent_end([ended], username="tester", at=at(hours=8, minutes=6), **args) is None
    assert find_recent_end([ended], username="tester", at=at(hours=7), **args) is None
    assert find_recent_end([ended], username="other", at=at(hours=8), **args) is None


@pytest.mark.parametrize(
    ("body", "count"),
    [
        (b"[]", 0),
        (b'[{"id":1},{"id":2}, 3]', None),  # unreadable, not two entries: never "not there"
        (b'{"data":[["tester","2024-07-01T06:00:00.000Z"]]}', None),
        (b'{"data":[{"id":1}]}', 1),
        (b'{"attendances":[{"id":1}]}', 1),
        (b'{"errors":[{"detail":"x"}]}', None),
        (b"<html>", None),
        (b'"text"', None),
    ],
)
def test_entries_of(body: bytes, count: int | None) -> None:
    entries = entries_of(body)
    assert (None if entries is None else len(entries)) == count


# -- (c) every answer -------------------------------------------------------------------------


def _errors(status: int, detail: str, code: int = 10001) -> bytes:
    return json.dumps(
        {"errors": [{"title": "Bad", "status": status, "code": code, "detail": detail}]}
    ).encode()


R = Outcome
CLASSIFY_TABLE = [
    # status, body, Retry-After, outcome, text in the detail, retry_after
    (200, b'{"id":1}', None, R.DELIVERED, "HTTP 200", None),
    (201, b"", None, R.DELIVERED, "HTTP 201", None),
    (204, b"", None, R.DELIVERED, "HTTP 204", None),
    (401, _errors(401, "Invalid API key or secret"), None, R.PAUSED, "Invalid API key", None),
    (401, b"", None, R.PAUSED, "HTTP 401", None),
    (403, _errors(403, "Forbidden for this key"), None, R.PAUSED, "Forbidden", None),
    (302, b"", None, R.PAUSED, "base_url", None),
    (500, _errors(500, "boom"), None, R.RETRY_LATER, "HTTP 500", None),
    (503, b"Service Unavailable", None, R.RETRY_LATER, "HTTP 503", None),
    (504, b"", None, R.RETRY_LATER, "HTTP 504", None),
    (429, b"", "12", R.RETRY_LATER, "429", 12.0),
    (429, b"", None, R.RETRY_LATER, "429", None),
    (400, _errors(400, "from must be in format"), None, R.PERMANENT_FAILURE, "from must be", None),
    (
        404,
        _errors(404, "TimeEntry exist but it is deleted", 15020),
        None,
        R.PERMANENT_FAILURE,
        "TimeEntry exist but it is deleted (code 15020)",
        None,
    ),
    (
        422,
        b'{"errors":[{"title":"Unprocessable","status":422}]}',
        None,
        R.PERMANENT_FAILURE,
        "Unprocessable",
        None,
    ),
    (400, b"<html>Bad Request</html>", None, R.PERMANENT_FAILURE, "HTTP 400: <html>Bad", None),
    (409, b"", None, R.PERMANENT_FAILURE, "HTTP 409: (empty)", None),
]


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "outcome", "text", "delay"),
    CLASSIFY_TABLE,
    ids=[f"{row[0]}-{row[1][:30]!r}" for row in CLASSIFY_TABLE],
)
def test_classify_timetrack_reply(
    status: int,
    body: bytes,
    retry_after: str | None,
    outcome: Outcome,
    text: str,
    delay: float | None,
) -> None:
    result = classify_timetrack_reply(status, body, retry_after)
    assert result.outcome is outcome, result
    assert text in result.detail
    assert result.retry_after == delay
    assert result.state is None


@pytest.mark.parametrize("status", [200, 400, 401, 404, 503])
def test_classify_keeps_details_short(status: int) -> None:
    for body in (_errors(status, "x" * 5000), b"y" * 5000):
        assert len(classify_timetrack_reply(status, body, None).detail) <= DETAIL_MAX


# -- (d) the sink against the fake ------------------------------------------------------------


def make_config(base_url: str, **overrides: Any) -> TimeTrackConfig:
    values: dict[str, Any] = {
        "base_url": base_url,
        "api_key": SecretStr(API_KEY),
        "api_secret": SecretStr(API_SECRET),
        "timeout_seconds": 5,
    }
    values.update(overrides)
    return TimeTrackConfig(**values)


def make_sink(
    session: aiohttp.ClientSession, base_url: str, *, zone: ZoneInfo = BERLIN, **overrides: Any
) -> TimeTrackSink:
    return TimeTrackSink(session=session, config=make_config(base_url, **overrides), site_tz=zone)


class Person:
    """Plays the store for one person: hands each job the saved state, saves Result.state."""

    def __init__(self, sink: TimeTrackSink, state: Mapping[str, Any] | None = None) -> None:
        self.sink = sink
        self.state: Mapping[str, Any] = dict(state or {})
        self.results: list[Result] = []

    async def send(self, action: Action, time: datetime, **overrides: Any) -> Result:
        job = make_job(action, time, state=self.state, **overrides)
        result = await self.sink.send(job)
        if result.state is not None:
            self.state = result.state
        self.results.append(result)
        return result


FULL_SHIFT = [
    (IN, T0, "morning"),
    (BS, at(hours=4), None),
    (BE, at(hours=4, minutes=15), None),
    (OUT, at(hours=8, minutes=30), "done"),
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


def creates(fake: FakeTimeTrack) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r["method"] == "POST"]


async def test_full_shift_makes_one_attendance(sink: TimeTrackSink, fake: FakeTimeTrack) -> None:
    person = Person(sink)
    outcomes = [(await person.send(a, t, note=n)).outcome for a, t, n in FULL_SHIFT]
    assert outcomes == [D, D, D, D]
    assert person.results[0].detail == "shift opened"
    assert [r["method"] for r in fake.requests] == ["POST"]  # in and breaks send nothing
    [entry] = fake.live()
    assert entry["user"] == "tester"
    assert entry["from"] == "2024-07-01T06:00:00.000Z"
    assert entry["to"] == "2024-07-01T14:30:00.000Z"
    assert entry["breakMinutes"] == 15
    assert entry["workedMinutes"] == 8 * 60 + 30 - 15
    assert entry["notes"] == "morning; done"
    assert fake.ignored_fields == []
    assert person.state == {}
    assert "attendance recorded" in person.results[-1].detail
    assert "id 1" in person.results[-1].detail
    headers_ok = json.loads(creates(fake)[0]["body"])
    assert headers_ok["username"] == "tester"


async def test_every_message_twice_is_still_one(sink: TimeTrackSink, fake: FakeTimeTrack) -> None:
    person = Person(sink)
    outcomes = []
    for action, time, note in FULL_SHIFT:
        outcomes.extend([(await person.send(action, time, note=note)).outcome for _ in range(2)])
    assert outcomes == [D, DUP, D, DUP, D, DUP, D, DUP]
    assert "swiped in twice" in person.results[1].detail
    assert "already holds" in person.results[-1].detail  # the second out found it
    assert len(fake.live()) == 1
    assert len(creates(fake)) == 1
    assert person.state == {}


async def test_local_timestamps_and_example_field_names(
    session: aiohttp.ClientSession, base_url: str, fake: FakeTimeTrack
) -> None:
    fake.fields = dict(EXAMPLE_FIELDS)
    fake.strict_fields = True
    sink = make_sink(session, base_url, timestamps="local", fields=EXAMPLE)
    person = Person(sink)
    for action, time, note in FULL_SHIFT:
        assert (await person.send(action, time, note=note)).outcome is D
    [entry] = fake.live()
    assert entry["from"] == "2024-07-01T08:00:00.000Z"  # Berlin wall time
    assert entry["to"] == "2024-07-01T16:30:00.000Z"
    assert entry["breakMinutes"] == 15
    assert entry["notes"] == "morning; done"
    # the search after a lost answer compares local wall times too
    person = Person(sink, open_state(at(hours=24)))
    fake.lose_answers = 1
    assert (await person.send(OUT, at(hours=32))).outcome is Outcome.RETRY_LATER
    assert (await person.send(OUT, at(hours=32))).outcome is DUP
    assert [e["from"] for e in fake.live()][1:] == ["2024-07-02T08:00:00.000Z"]


async def test_field_names_the_account_does_not_know(
    sink: TimeTrackSink, fake: FakeTimeTrack
) -> None:
    fake.fields = dict(EXAMPLE_FIELDS)  # the account wants minutesBreak/details
    person = Person(sink)
    for action, time, note in FULL_SHIFT:
        await person.send(action, time, note=note)
    [entry] = fake.live()
    assert entry["breakMinutes"] == 0  # silently dropped: why the names are configurable
    assert sorted(fake.ignored_fields) == ["breakMinutes", "notes"]
    fake.strict_fields = True
    person = Person(sink)
    for action, time, _ in FULL_SHIFT:
        result = await person.send(action, time + timedelta(days=1))
    assert result.outcome is Outcome.PERMANENT_FAILURE
    assert "Unknown field breakMinutes" in result.detail


async def test_out_without_in_is_held(sink: TimeTrackSink, fake: FakeTimeTrack) -> None:
    result = await Person(sink).send(OUT, at(hours=8))
    assert result.outcome is Outcome.HELD
    assert "no open shift" in result.detail
    assert "2024-07-01T14:00:00Z" in result.detail
    assert result.state is None
    assert creates(fake) == []
    [search] = fake.requests
    assert search["method"] == "GET"
    assert search["query"]["username"] == search["query"]["user"] == "tester"


async def test_out_of_a_too_long_shift_is_held(sink: TimeTrackSink, fake: FakeTimeTrack) -> None:
    person = Person(sink)
    await person.send(IN, T0)
    result = await person.send(OUT, at(hours=17))
    assert result.outcome is Outcome.HELD
    assert "longer than the max shift" in result.detail
    assert result.state is None  # the open shift is kept for the operator
    assert person.state == open_state()
    assert fake.requests == []


async def test_in_while_a_too_long_shift_is_open_is_held(
    session: aiohttp.ClientSession, base_url: str, fake: FakeTimeTrack
) -> None:
    person = Person(make_sink(session, base_url, max_shift_hours=10))
    await person.send(IN, T0)
    assert (await person.send(IN, at(hours=9))).outcome is DUP
    result = await person.send(IN, at(hours=11))
    assert result.outcome is Outcome.HELD
    assert "2024-07-01T06:00:00Z" in result.detail
    assert person.state == open_state()
    assert fake.requests == []


async def test_operator_completes_a_held_shift(sink: TimeTrackSink, fake: FakeTimeTrack) -> None:
    person = Person(sink)
    await person.send(IN, T0)
    held_in = await person.send(IN, at(hours=24))  # yesterday's out is missing
    assert held_in.outcome is Outcome.HELD
    # the operator says the shift ended at 14:00 and requeues the held `in`
    person.state = complete_shift(person.state, to=at(hours=8))
    result = await person.send(IN, at(hours=24))
    assert result.outcome is D
    assert "closed shift recorded" in result.detail
    assert "shift opened" in result.detail
    assert person.state == open_state(at(hours=24))
    [entry] = fake.live()
    assert (entry["from"], entry["to"]) == ("2024-07-01T06:00:00.000Z", "2024-07-01T14:00:00.000Z")


async def test_operator_accepts_a_held_out(sink: TimeTrackSink, fake: FakeTimeTrack) -> None:
    person = Person(sink)
    await person.send(IN, T0)
    assert (await person.send(OUT, at(hours=20))).outcome is Outcome.HELD
    person.state = complete_shift(person.state, to=at(hours=20))
    result = await person.send(OUT, at(hours=20))
    assert result.outcome is D
    assert person.state == {}
    assert len(fake.live()) == 1


async def test_operator_supplies_a_missing_in(sink: TimeTrackSink, fake: FakeTimeTrack) -> None:
    person = Person(sink)
    assert (await person.send(OUT, at(hours=8))).outcome is Outcome.HELD
    person.state = start_shift(person.state, from_=T0)
    assert (await person.send(OUT, at(hours=8))).outcome is D
    [entry] = fake.live()
    assert entry["from"] == "2024-07-01T06:00:00.000Z"


async def test_lost_answer_then_search_finds_it(sink: TimeTrackSink, fake: FakeTimeTrack) -> None:
    person = Person(sink, open_state())
    fake.lose_answers = 1
    result = await person.send(OUT, at(hours=8))
    assert result.outcome is Outcome.RETRY_LATER
    assert "ServerDisconnectedError" in result.detail
    assert person.state == {**open_state(), "unverified": True}
    assert len(fake.live()) == 1  # it did land
    retry = await person.send(OUT, at(hours=8))
    assert retry.outcome is DUP
    assert "already holds it (id 1" in retry.detail
    assert person.state == {}
    assert len(fake.live()) == 1
    assert [r["method"] for r in fake.requests] == ["POST", "GET"]


async def test_slow_answer_then_search_finds_it(
    session: aiohttp.ClientSession, base_url: str, fake: FakeTimeTrack
) -> None:
    person = Person(make_sink(session, base_url, timeout_seconds=0.2), open_state())
    fake.delay_seconds = 0.5
    result = await person.send(OUT, at(hours=8))
    assert result.outcome is Outcome.RETRY_LATER
    assert "Timeout" in result.detail
    assert person.state.get("unverified") is True
    fake.delay_seconds = 0
    for _ in range(50):  # the slow handler finishes after the client gave up
        if fake.live():
            break
        await asyncio.sleep(0.05)
    assert (await person.send(OUT, at(hours=8))).outcome is DUP
    assert len(fake.live()) == 1


async def test_504_then_search_finds_nothing_and_creates(
    sink: TimeTrackSink, fake: FakeTimeTrack
) -> None:
    person = Person(sink, open_state())
    fake.fail_5xx, fake.fail_status = 1, 504
    result = await person.send(OUT, at(hours=8))
    assert result.outcome is Outcome.RETRY_LATER
    assert person.state.get("unverified") is True
    assert (await person.send(OUT, at(hours=8))).outcome is D
    assert [r["method"] for r in fake.requests] == ["POST", "GET", "POST"]
    assert len(fake.live()) == 1
    assert person.state == {}


async def test_failed_search_never_creates(sink: TimeTrackSink, fake: FakeTimeTrack) -> None:
    person = Person(sink, {**open_state(), "unverified": True})
    fake.fail_5xx = 1
    result = await person.send(OUT, at(hours=8))
    assert result.outcome is Outcome.RETRY_LATER
    assert "search" in result.detail
    assert creates(fake) == []
    assert person.state.get("unverified") is True


async def test_search_pages_through(sink: TimeTrackSink, fake: FakeTimeTrack) -> None:
    # 1000 earlier attendances of the same person in the search window, then ours
    for minute in range(1000):
        start = at(hours=-20, minutes=minute / 100)
        fake.attendances.append(
            {
                "id": len(fake.attendances) + 1,
                "user": "tester",
                "from": format_timestamp(start, mode="utc", site_tz=BERLIN),
                "to": "2024-07-01T05:00:00.000Z",
                "breakMinutes": 0,
            }
        )
    person = Person(sink, {**open_state(), "unverified": True})
    fake.lose_answers = 0
    assert (await person.send(OUT, at(hours=8))).outcome is D  # searched 2 pages, then created
    pages = [r["query"]["page_number"] for r in fake.requests if r["method"] == "GET"]
    assert pages == ["0", "1"]
    assert all(r["query"]["limit"] == "1000" for r in fake.requests if r["method"] == "GET")
    person = Person(sink, {**open_state(), "unverified": True})
    assert (await person.send(OUT, at(hours=8))).outcome is DUP  # found on page 1
    assert len([a for a in fake.live() if a["from"] == "2024-07-01T06:00:00.000Z"]) == 1


async def test_connection_refused_is_not_ambiguous(session: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    person = Person(make_sink(session, f"http://127.0.0.1:{port}"), open_state())
    result = await person.send(OUT, at(hours=8))
    assert result.outcome is Outcome.RETRY_LATER
    assert "ClientConnectorError" in result.detail
    assert result.state is None  # nothing was sent: no search needed


@pytest.mark.parametrize("wrong", ["key", "secret"])
async def test_refused_credentials_pause(
    session: aiohttp.ClientSession, base_url: str, fake: FakeTimeTrack, wrong: str
) -> None:
    bad: dict[str, Any] = {f"api_{wrong}": SecretStr("not-the-right-one")}
    sink = make_sink(session, base_url, **bad)
    person = Person(sink, open_state())
    result = await person.send(OUT, at(hours=8))
    assert result.outcome is Outcome.PAUSED
    assert "Invalid API key or secret" in result.detail
    assert person.state == open_state()
    assert fake.live() == []


async def test_503_retries(sink: TimeTrackSink, fake: FakeTimeTrack) -> None:
    person = Person(sink, open_state())
    fake.fail_5xx = 1
    result = await person.send(OUT, at(hours=8))
    assert result.outcome is Outcome.RETRY_LATER
    assert result.detail == "HTTP 503"
    assert (await person.send(OUT, at(hours=8))).outcome is D
    assert len(fake.live()) == 1


async def test_429_retries_after_the_given_delay(sink: TimeTrackSink, fake: FakeTimeTrack) -> None:
    person = Person(sink, open_state())
    fake.rate_limited, fake.retry_after_seconds = 1, 9
    result = await person.send(OUT, at(hours=8))
    assert result.outcome is Outcome.RETRY_LATER
    assert result.retry_after == 9.0
    assert result.state is None  # a 429 was not processed: no search needed


async def test_400_is_dead_with_the_detail(sink: TimeTrackSink, fake: FakeTimeTrack) -> None:
    fake.known_users = {"someone-else"}
    person = Person(sink, open_state())
    result = await person.send(OUT, at(hours=8))
    assert result.outcome is Outcome.PERMANENT_FAILURE
    assert "User tester does not exist" in result.detail
    assert "2024-07-01T06:00:00Z" in result.detail  # the shift is named in the dead letter
    assert result.state == {}
    assert fake.live() == []


async def test_unreadable_state_is_held(sink: TimeTrackSink, fake: FakeTimeTrack) -> None:
    result = await Person(sink, {"shift": {"from": 7}}).send(IN, T0)
    assert result.outcome is Outcome.HELD
    assert "unreadable" in result.detail
    assert result.state is None


async def test_cancellation_propagates(sink: TimeTrackSink, fake: FakeTimeTrack) -> None:
    fake.delay_seconds = 5
    task = asyncio.create_task(Person(sink, open_state()).send(OUT, at(hours=8)))
    await fake.wait_for_requests(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_sink_needs_both_secrets() -> None:
    for missing in ("api_key", "api_secret"):
        config = make_config("http://x").model_copy(update={missing: None})
        with pytest.raises(ValueError, match=missing):
            TimeTrackSink(session=None, config=config, site_tz=BERLIN)  # type: ignore[arg-type]


# -- (e) the fake behaves like the documented service ----------------------------------------


async def test_fake_validates_and_manages_entries(
    session: aiohttp.ClientSession, base_url: str, fake: FakeTimeTrack
) -> None:
    headers = {"X-TimeTrack-Api-Key": API_KEY, "X-TimeTrack-Api-Secret": API_SECRET}
    url = f"{base_url}/api/v2/ext/attendances"
    good = {
        "username": "tester",
        "from": "2020-10-17T10:00:00.000Z",
        "to": "2020-10-17T14:00:00.000Z",
    }
    for bad in (
        {**good, "username": ""},
        {k: v for k, v in good.items() if k != "from"},
        {**good, "to": "2020-10-17T14:00:00Z"},
        {**good, "to": "2020-10-17 14:00:00.000Z"},
        {**good, "from": "2020-02-30T10:00:00.000Z"},
        {**good, "to": good["from"]},
    ):
        async with session.post(url, json=bad, headers=headers) as response:
            assert response.status == 400, bad
            [error] = (await response.json())["errors"]
            assert set(error) == {"title", "status", "code", "detail"}
    async with session.post(url, json=good, headers=headers) as response:
        assert response.status == 201
        ident = (await response.json())["id"]
    async with session.put(
        f"{url}/{ident}", json={"to": "2020-10-17T23:00:00.000Z"}, headers=headers
    ) as r:
        assert (await r.json())["to"] == "2020-10-17T23:00:00.000Z"
    async with session.get(
        url,
        params={"user": "tester", "from": "2020-10-01T00:00:00Z", "to": "2020-10-31T00:00:00Z"},
        headers=headers,
    ) as r:
        assert [e["id"] for e in await r.json()] == [ident]
    async with session.get(url, params={"username": "other"}, headers=headers) as r:
        assert await r.json() == []
    async with session.get(url, params={"limit": "1001"}, headers=headers) as r:
        assert r.status == 400
    async with session.delete(f"{url}/{ident}", headers=headers) as r:
        assert r.status == 200
    async with session.get(f"{url}/{ident}", headers=headers) as r:
        assert r.status == 404
        [error] = (await r.json())["errors"]
        assert (error["code"], error["detail"]) == (15020, "TimeEntry exist but it is deleted")
    async with session.get(url, headers=headers) as r:
        assert await r.json() == []
    fake.add_user("tester")
    fake.add_user("other")
    async with session.get(
        f"{base_url}/api/v2/ext/users", params={"username": "other"}, headers=headers
    ) as r:
        assert [u["username"] for u in await r.json()] == ["other"]
    async with session.get(url, headers={**headers, "X-TimeTrack-Api-Secret": "nope"}) as r:
        assert r.status == 401


async def test_fake_pages_and_envelope(
    session: aiohttp.ClientSession, base_url: str, fake: FakeTimeTrack, sink: TimeTrackSink
) -> None:
    headers = {"X-TimeTrack-Api-Key": API_KEY, "X-TimeTrack-Api-Secret": API_SECRET}
    url = f"{base_url}/api/v2/ext/attendances"
    for day in range(3):
        person = Person(sink)
        await person.send(IN, at(hours=24 * day))
        await person.send(OUT, at(hours=24 * day + 8))
    async with session.get(url, params={"limit": "2", "page_number": "1"}, headers=headers) as r:
        assert [e["id"] for e in await r.json()] == [3]
    fake.list_envelope = "data"
    async with session.get(url, params={"limit": "2"}, headers=headers) as r:
        assert [e["id"] for e in (await r.json())["data"]] == [1, 2]
    # the sink reads the enveloped answer too
    person = Person(sink, {**open_state(), "unverified": True})
    assert (await person.send(OUT, at(hours=8))).outcome is DUP


# -- (f) the key and the secret never reach a Result.detail ----------------------------------


async def _echo(request: web.Request) -> web.Response:
    """A misbehaving server quoting the credentials back."""
    key = request.headers.get("X-TimeTrack-Api-Key", "")
    secret = request.headers.get("X-TimeTrack-Api-Secret", "")
    shape = request.match_info["shape"]
    if shape == "errors":
        body = {"errors": [{"title": "Bad", "status": 400, "detail": f"key {key} / {secret}"}]}
        return web.json_response(body, status=400)
    if shape == "auth":
        return web.json_response({"errors": [{"detail": f"who is {secret}?"}]}, status=401)
    if shape == "long":  # the secret straddles where an excerpt is cut
        return web.Response(status=422, text="x" * 110 + secret + key)
    if shape == "upper":
        return web.Response(status=404, text=f"no tenant {key.upper()} {secret.upper()}")
    if shape == "moved":  # a redirect must not be followed: it would carry the headers along
        msg = f"/errors/api/v2/ext/attendances?k={key}"
        raise web.HTTPFound(msg)
    if shape == "search":
        return web.Response(status=200, text=f"<html>{key}{secret}</html>")
    return web.Response(status=500, text=secret)


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{shape}/api/v2/ext/attendances", _echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_credentials_never_in_detail(session: aiohttp.ClientSession, echo_url: str) -> None:
    results: list[Result] = []
    # every fake scenario, with the usual and with wrong credentials
    scenarios: list[dict[str, Any]] = [
        {},
        {"fail_5xx": 1},
        {"rate_limited": 1},
        {"lose_answers": 1},
        {"known_users": {"x"}},
        {"delay_seconds": 0.5},
    ]
    for switches in scenarios:
        wrong_key: dict[str, Any] = {"api_key": SecretStr("Wrong-Key-XYZ")}
        for creds in ({}, wrong_key):
            fake = FakeTimeTrack(api_key=API_KEY, api_secret=API_SECRET)
            for name, value in switches.items():
                setattr(fake, name, value)
            async with running_fake_timetrack(fake) as url:
                person = Person(make_sink(session, url, timeout_seconds=0.2, **creds))
                for action, time, note in FULL_SHIFT:
                    await person.send(action, time, note=note)
                await person.send(OUT, at(hours=9))
                results.extend(person.results)
    for shape in ("errors", "auth", "long", "upper", "plain"):
        person = Person(make_sink(session, f"{echo_url}/{shape}"), open_state())
        results.append(await person.send(OUT, at(hours=8)))
    person = Person(make_sink(session, f"{echo_url}/search"), {**open_state(), "unverified": True})
    results.append(await person.send(OUT, at(hours=8)))
    moved = await Person(make_sink(session, f"{echo_url}/moved"), open_state()).send(
        OUT, at(hours=8)
    )
    assert moved.outcome is Outcome.PAUSED
    assert "base_url" in moved.detail

    assert {r.outcome for r in results} >= {D, DUP, HELD, Outcome.RETRY_LATER, Outcome.PAUSED}
    for result in results:
        text = result.detail.lower()
        for secret in (API_KEY, API_SECRET):
            assert secret.lower()[:10] not in text, result
        assert len(result.detail) <= DETAIL_MAX
    assert any("<redacted>" in r.detail for r in results[-6:])  # the echo did reach details
