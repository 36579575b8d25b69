"""Go2Clock: the answer table, the punch form, and the sink against the running fake vendor."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from bridge.config import Go2ClockConfig
from bridge.delivery import Job, Outcome, Result
from bridge.events import Action
from bridge.vendors.common import DETAIL_MAX
from bridge.vendors.go2clock.api import classify_go2clock_reply
from bridge.vendors.go2clock.sink import Go2ClockSink, build_punch_form, encode_form
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock

API_KEY = "g2c-Secret-KEY-7f3a9c1e5b"
BERLIN = ZoneInfo("Europe/Berlin")
CHECKTYPES = {Action.IN: 0, Action.OUT: 1, Action.BREAK_START: 2, Action.BREAK_END: 3}

SUCCESS = b'{"status":"success","message":"","error":"Success created."}'
EXISTS = (
    b'{"status":"failure","message":"",'
    b'"error":{"userid":"The record already exists on the cloud server."}}'
)
VALIDATION = b'{"status":"failure","message":"Validation Error","error":"Bad checktime"}'
INVALID_KEY = b'{"status": false, "error": "Invalid API key "}'
UNEXPECTED = (
    b'{"status":"failure","message":"",'
    b'"error":"An unexpected error trying to create the record on the cloud server"}'
)


def make_job(**overrides: object) -> Job:
    fields: dict[str, object] = {
        "delivery_id": 1,
        "event_key": "ev-1",
        "sink": "go2clock",
        "person": "42",
        "action": Action.IN,
        "time": datetime(2024, 7, 1, 6, 0, tzinfo=UTC),
        "terminal": "ABC123XYZ",
        "attempt": 1,
    }
    fields.update(overrides)
    return Job(**fields)  # type: ignore[arg-type]


def make_sink(
    session: aiohttp.ClientSession, base_url: str, *, api_key: str = API_KEY, timeout: float = 5
) -> Go2ClockSink:
    config = Go2ClockConfig(base_url=base_url, api_key=SecretStr(api_key), timeout_seconds=timeout)
    return Go2ClockSink(session=session, config=config, account_tz=BERLIN)


@pytest.fixture
def fake() -> FakeGo2Clock:
    return FakeGo2Clock(api_key=API_KEY)


@pytest.fixture
async def base_url(fake: FakeGo2Clock) -> AsyncIterator[str]:
    async with running_fake_go2clock(fake) as url:
        yield url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def sink(session: aiohttp.ClientSession, base_url: str) -> Go2ClockSink:
    return make_sink(session, base_url)


# -- (a) every documented answer -------------------------------------------------------------

R = Outcome
CLASSIFY_TABLE = [
    # status, body, Retry-After, outcome, text the detail must hold, retry_after
    (200, SUCCESS, None, R.DELIVERED, "Success created", None),
    (201, SUCCESS, None, R.DELIVERED, "", None),
    (200, EXISTS, None, R.DUPLICATE, "already exists", None),
    (409, EXISTS, None, R.DUPLICATE, "already exists", None),  # the body decides, not the status
    (500, EXISTS, None, R.DUPLICATE, "already exists", None),
    (200, VALIDATION, None, R.PERMANENT_FAILURE, "Validation Error: Bad checktime", None),
    (422, VALIDATION, None, R.PERMANENT_FAILURE, "Bad checktime", None),
    (200, INVALID_KEY, None, R.PAUSED, "API key", None),
    (401, INVALID_KEY, None, R.PAUSED, "API key", None),
    (403, INVALID_KEY, None, R.PAUSED, "API key", None),
    (200, UNEXPECTED, None, R.RETRY_LATER, "unexpected error", None),
    (500, UNEXPECTED, None, R.RETRY_LATER, "unexpected error", None),
    (503, b"<html>Service Unavailable</html>", None, R.RETRY_LATER, "HTTP 503", None),
    (502, b"", None, R.RETRY_LATER, "HTTP 502", None),
    (429, b"Too Many Requests", "7", R.RETRY_LATER, "429", 7.0),
    (429, b"", None, R.RETRY_LATER, "429", None),
    (404, b"404: Not Found", None, R.PERMANENT_FAILURE, "HTTP 404: 404: Not Found", None),
    (400, b"<html>Bad Request</html>", None, R.PERMANENT_FAILURE, "HTTP 400: <html>Bad", None),
    (401, b"", None, R.PAUSED, "HTTP 401", None),  # key refused without the documented body
    (302, b"", None, R.PAUSED, "base_url", None),  # redirects are not followed
    (200, b"<html>maintenance</html>", None, R.RETRY_LATER, "not a JSON object", None),
    (200, b"", None, R.RETRY_LATER, "not a JSON object", None),
    (200, b"[]", None, R.RETRY_LATER, "not a JSON object", None),
    (200, b'{"status":"pending"}', None, R.RETRY_LATER, "unrecognised", None),
    (
        200,
        b'{"status":"failure","error":"Quota used up"}',
        None,
        R.PERMANENT_FAILURE,
        "Quota",
        None,
    ),
    (
        200,
        b'{"status":false,"error":"Account suspended"}',
        None,
        R.PERMANENT_FAILURE,
        "suspended",
        None,
    ),
]


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "outcome", "text", "delay"),
    CLASSIFY_TABLE,
    ids=[f"{row[0]}-{row[1][:40]!r}" for row in CLASSIFY_TABLE],
)
def test_classify_go2clock_reply(
    status: int,
    body: bytes,
    retry_after: str | None,
    outcome: Outcome,
    text: str,
    delay: float | None,
) -> None:
    result = classify_go2clock_reply(status, body, retry_after)
    assert result.outcome is outcome, result
    assert text in result.detail
    assert result.retry_after == delay
    assert len(result.detail) <= DETAIL_MAX


@pytest.mark.parametrize("status", [200, 404, 503])
def test_classify_keeps_details_short(status: int) -> None:
    huge = json.dumps({"status": "failure", "message": "Validation Error", "error": "x" * 5000})
    for body in (huge.encode(), b"y" * 5000, huge.encode()[:-1]):
        assert len(classify_go2clock_reply(status, body, None).detail) <= DETAIL_MAX


# -- (b) the punch form ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("utc", "zone", "checktime"),
    [
        (datetime(2024, 7, 1, 6, 0, tzinfo=UTC), BERLIN, "2024-07-01T08:00:00"),  # CEST, +2
        (datetime(2024, 1, 15, 7, 0, 5, tzinfo=UTC), BERLIN, "2024-01-15T08:00:05"),  # CET, +1
        (datetime(2024, 3, 31, 1, 30, tzinfo=UTC), BERLIN, "2024-03-31T03:30:00"),  # after spring
        (datetime(2024, 3, 31, 23, 30, tzinfo=UTC), ZoneInfo("Asia/Tokyo"), "2024-04-01T08:30:00"),
        (
            datetime(2024, 9, 1, 8, 0, 0, 999_999, tzinfo=UTC),
            ZoneInfo("UTC"),
            "2024-09-01T08:00:00",
        ),
    ],
)
def test_checktime_is_account_wall_clock(utc: datetime, zone: ZoneInfo, checktime: str) -> None:
    form = build_punch_form(make_job(time=utc), account_tz=zone, checktypes=CHECKTYPES)
    assert form["checktime"] == checktime


def test_checktime_from_a_non_utc_aware_time() -> None:
    job = make_job(time=datetime(2024, 1, 15, 3, 0, tzinfo=ZoneInfo("America/New_York")))
    form = build_punch_form(job, account_tz=BERLIN, checktypes=CHECKTYPES)
    assert form["checktime"] == "2024-01-15T09:00:00"


def test_autumn_hour_repeats_in_wall_clock() -> None:
    # Documents a vendor limit: without an offset, 02:30 CEST and 02:30 CET look the same.
    first = make_job(time=datetime(2024, 10, 27, 0, 30, tzinfo=UTC))
    second = make_job(time=datetime(2024, 10, 27, 1, 30, tzinfo=UTC))
    forms = [build_punch_form(j, account_tz=BERLIN, checktypes=CHECKTYPES) for j in (first, second)]
    assert forms[0]["checktime"] == forms[1]["checktime"] == "2024-10-27T02:30:00"


def test_form_has_every_field() -> None:
    job = make_job(
        action=Action.BREAK_END, job="123", lat=40.7128, lon=-74.006, note="Check-in at main gate"
    )
    form = build_punch_form(job, account_tz=BERLIN, checktypes={**CHECKTYPES, Action.BREAK_END: 7})
    assert form == {
        "userid": "42",
        "checktime": "2024-07-01T08:00:00",
        "checktype": "7",
        "worktype": "123",
        "latitude": "40.7128",
        "longitude": "-74.006",
        "eventdescription": "Check-in at main gate",
        "deviceserial": "ABC123XYZ",
    }


def test_form_omits_missing_fields() -> None:
    form = build_punch_form(make_job(action=Action.OUT), account_tz=BERLIN, checktypes=CHECKTYPES)
    assert set(form) == {"userid", "checktime", "checktype", "deviceserial"}
    assert form["checktype"] == "1"


def test_form_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        build_punch_form(
            make_job(time=datetime(2024, 7, 1, 6, 0)), account_tz=BERLIN, checktypes=CHECKTYPES
        )


# -- (c) the sink against the fake, one switch at a time -------------------------------------


async def test_success_stores_the_punch(sink: Go2ClockSink, fake: FakeGo2Clock) -> None:
    job = make_job(job="9", lat=52.5, lon=13.4, note="gate")
    result = await sink.send(job)
    assert result.outcome is Outcome.DELIVERED
    [record] = fake.records
    assert record["userid"] == "42"
    assert record["checktime"] == "2024-07-01T08:00:00"
    assert record["checktype"] == "0"
    assert record["worktype"] == "9"
    assert record["deviceserial"] == "ABC123XYZ"
    assert fake.created_count == 1


async def test_second_send_is_duplicate(sink: Go2ClockSink, fake: FakeGo2Clock) -> None:
    assert (await sink.send(make_job())).outcome is Outcome.DELIVERED
    result = await sink.send(make_job(delivery_id=2))
    assert result.outcome is Outcome.DUPLICATE
    assert fake.duplicate_answers == 1
    assert fake.punches_by_key() == {("42", "2024-07-01T08:00:00"): 1}


async def test_validation_error_is_dead(sink: Go2ClockSink, fake: FakeGo2Clock) -> None:
    fake.invalid_userids.add("42")
    result = await sink.send(make_job())
    assert result.outcome is Outcome.PERMANENT_FAILURE
    assert "Validation Error" in result.detail
    assert "42" in result.detail
    assert fake.records == []


@pytest.mark.parametrize("http_status", [200, 401, 403])
async def test_wrong_key_pauses(
    session: aiohttp.ClientSession, base_url: str, fake: FakeGo2Clock, http_status: int
) -> None:
    fake.invalid_key_http_status = http_status
    result = await make_sink(session, base_url, api_key="not-the-key").send(make_job())
    assert result.outcome is Outcome.PAUSED
    assert [r["answer"] for r in fake.requests] == ["invalid_key"]
    assert fake.records == []


async def test_unexpected_error_retries(sink: Go2ClockSink, fake: FakeGo2Clock) -> None:
    fake.unexpected_errors = 1
    result = await sink.send(make_job())
    assert result.outcome is Outcome.RETRY_LATER
    assert "unexpected error" in result.detail
    assert fake.records == []
    assert (await sink.send(make_job())).outcome is Outcome.DELIVERED


async def test_503_retries(sink: Go2ClockSink, fake: FakeGo2Clock) -> None:
    fake.fail_5xx = 2
    for _ in range(2):
        result = await sink.send(make_job())
        assert result.outcome is Outcome.RETRY_LATER
        assert result.detail == "HTTP 503"
    assert fake.records == []
    assert (await sink.send(make_job())).outcome is Outcome.DELIVERED


async def test_429_retries_after_the_given_delay(sink: Go2ClockSink, fake: FakeGo2Clock) -> None:
    fake.rate_limited = 1
    fake.retry_after_seconds = 7
    result = await sink.send(make_job())
    assert result.outcome is Outcome.RETRY_LATER
    assert result.retry_after == 7.0
    assert (await sink.send(make_job())).outcome is Outcome.DELIVERED


async def test_slow_answer_times_out_and_the_resend_is_duplicate(
    session: aiohttp.ClientSession, base_url: str, fake: FakeGo2Clock
) -> None:
    fake.delay_seconds = 1.0
    result = await make_sink(session, base_url, timeout=0.2).send(make_job())
    assert result.outcome is Outcome.RETRY_LATER
    assert "Timeout" in result.detail
    # the slow server still stores it; the resend must then count as delivered
    fake.delay_seconds = 0
    await fake.wait_for_records(1, timeout=5)
    assert (await make_sink(session, base_url).send(make_job())).outcome is Outcome.DUPLICATE
    assert fake.punches_by_key() == {("42", "2024-07-01T08:00:00"): 1}


async def test_lost_answer_then_resend_is_duplicate(sink: Go2ClockSink, fake: FakeGo2Clock) -> None:
    # aiohttp resends an idempotent PUT once by itself after a dropped connection, so two
    # answers must be lost for the sink to see the failure.
    fake.lose_answers = 2
    result = await sink.send(make_job())
    assert result.outcome is Outcome.RETRY_LATER
    assert "ServerDisconnectedError" in result.detail
    assert [r["answer"] for r in fake.requests] == ["lost:created", "lost:duplicate"]
    assert (await sink.send(make_job())).outcome is Outcome.DUPLICATE
    assert fake.punches_by_key() == {("42", "2024-07-01T08:00:00"): 1}


async def test_one_lost_answer_is_resent_by_aiohttp(sink: Go2ClockSink, fake: FakeGo2Clock) -> None:
    fake.lose_answers = 1
    assert (await sink.send(make_job())).outcome is Outcome.DUPLICATE
    assert [r["answer"] for r in fake.requests] == ["lost:created", "duplicate"]
    assert len(fake.records) == 1


async def test_connection_refused_retries(session: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await make_sink(session, f"http://127.0.0.1:{port}").send(make_job())
    assert result.outcome is Outcome.RETRY_LATER
    assert "ClientConnectorError" in result.detail


async def test_cancellation_propagates(sink: Go2ClockSink, fake: FakeGo2Clock) -> None:
    fake.delay_seconds = 5
    task = asyncio.create_task(sink.send(make_job()))
    await fake.wait_for_requests(1)  # the request is in the server's hands
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_fake_validates_like_the_vendor(
    session: aiohttp.ClientSession, base_url: str
) -> None:
    good = {"userid": "1", "checktime": "2024-09-01T08:00:00", "checktype": "0"}
    bad_forms = [
        {**good, "userid": ""},
        {**good, "checktime": "2024-09-01 08:00:00"},
        {**good, "checktime": "2024-09-01T08:00:00+02:00"},
        {**good, "checktime": "2024-02-30T08:00:00"},
        {**good, "checktype": "in"},
    ]
    for form in bad_forms:
        async with session.put(
            f"{base_url}/api/punches/", data=form, headers={"APIKEY": API_KEY}
        ) as response:
            answer = await response.json()
        assert answer["status"] == "failure", form
        assert answer["message"] == "Validation Error", form


async def test_fake_downloads_in_the_documented_format(
    session: aiohttp.ClientSession, base_url: str, sink: Go2ClockSink, fake: FakeGo2Clock
) -> None:
    await sink.send(make_job())
    await sink.send(make_job(person="7", time=datetime(2024, 7, 2, 6, 0, tzinfo=UTC)))
    await fake.wait_for_records(2, timeout=1)
    headers = {"APIKEY": API_KEY}
    form = {"start_date": "2024-07-01", "end_date": "2024-07-02", "userid": "7"}
    async with session.post(f"{base_url}/api/punches_range/", data=form, headers=headers) as r:
        answer = await r.json()
    assert answer["status"] == "success"
    [row] = answer["message"]
    assert row["userid"] == 7
    assert row["checktime"] == "2024-07-02 08:00:00"
    async with session.post(
        f"{base_url}/api/punches/", data={"punch_date": "2024-07-01"}, headers=headers
    ) as r:
        day = await r.json()
    assert [row["userid"] for row in day["message"]] == [42]


async def test_wait_for_records_times_out(fake: FakeGo2Clock) -> None:
    with pytest.raises(TimeoutError):
        await fake.wait_for_records(1, timeout=0.05)


# -- (d) the API key never reaches a Result.detail -------------------------------------------


@dataclass
class Case:
    arrange: Callable[[FakeGo2Clock], None]
    expected: Outcome
    api_key: str = API_KEY
    timeout: float = 5
    jobs: list[Job] = field(default_factory=lambda: [make_job()])


def _set(**switches: object) -> Callable[[FakeGo2Clock], None]:
    def arrange(fake: FakeGo2Clock) -> None:
        for name, value in switches.items():
            setattr(fake, name, value)

    return arrange


FAKE_CASES = [
    Case(_set(), Outcome.DELIVERED),
    Case(_set(), Outcome.DUPLICATE, jobs=[make_job(), make_job()]),
    Case(_set(invalid_userids={"42"}), Outcome.PERMANENT_FAILURE),
    Case(_set(), Outcome.PAUSED, api_key="Wrong-Key-5e9d"),
    Case(_set(invalid_key_http_status=401), Outcome.PAUSED, api_key="Wrong-Key-5e9d"),
    Case(_set(unexpected_errors=1), Outcome.RETRY_LATER),
    Case(_set(fail_5xx=1), Outcome.RETRY_LATER),
    Case(_set(rate_limited=1), Outcome.RETRY_LATER),
    Case(_set(delay_seconds=1.0), Outcome.RETRY_LATER, timeout=0.2),
    Case(_set(lose_answers=2), Outcome.RETRY_LATER),
]


async def _echo_key(request: web.Request) -> web.Response:
    """A misbehaving server that quotes the APIKEY header back in many shapes."""
    key = request.headers.get("APIKEY", "")
    shape = request.match_info["shape"]
    if shape == "json":
        body = {"status": "failure", "message": "Validation Error", "error": f"bad key {key}"}
        return web.json_response(body)
    if shape == "failure":
        return web.json_response({"status": "failure", "error": {"apikey": key}})
    if shape == "long":  # the key straddles where a detail excerpt is cut
        return web.Response(status=400, text="x" * 110 + key)
    if shape == "upper":
        return web.Response(status=404, text=f"no tenant for {key.upper()}")
    return web.Response(status=200, text=f"<html>hello {key}</html>")


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_put("/{shape}/api/punches/", _echo_key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_api_key_never_in_detail(session: aiohttp.ClientSession, echo_url: str) -> None:
    results: list[tuple[str, Result]] = []
    for number, case in enumerate(FAKE_CASES):
        fake = FakeGo2Clock(api_key=API_KEY)
        case.arrange(fake)
        async with running_fake_go2clock(fake) as base_url:
            sink = make_sink(session, base_url, api_key=case.api_key, timeout=case.timeout)
            for job in case.jobs:
                result = await sink.send(job)
        assert result.outcome is case.expected, (number, result)
        results.append((case.api_key, result))
    for shape in ("json", "failure", "long", "upper", "html"):
        result = await make_sink(session, f"{echo_url}/{shape}").send(make_job())
        results.append((API_KEY, result))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results.append((API_KEY, await make_sink(session, f"http://127.0.0.1:{port}").send(make_job())))

    for key, result in results:
        assert key.lower() not in result.detail.lower(), result
        assert API_KEY.lower()[:8] not in result.detail.lower(), result
        assert len(result.detail) <= DETAIL_MAX
    assert "<redacted>" in results[len(FAKE_CASES)][1].detail  # the echo did reach a detail


@given(st.dictionaries(st.text(), st.text()))
def test_the_form_is_encoded_as_urlencode_does(form: dict[str, str]):
    assert encode_form(form) == urlencode(form).encode()


def test_a_punch_form_is_encoded_as_urlencode_does():
    form = build_punch_form(
        make_job(time=datetime(2026, 11, 23, 5, 0, tzinfo=UTC)),
        account_tz=BERLIN,
        checktypes=CHECKTYPES,
    )
    assert encode_form(form) == urlencode(form).encode()
    assert b"checktime=2026-11-23T06%3A00%3A00" in encode_form(form)
