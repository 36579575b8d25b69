"""McTime's limit is never exceeded at the vendor: at most `rate_per_second` requests arrive in
any sliding 1-second window, counted by the fake by arrival time, even when requests reach the
vendor late (queued for a connection, a slow network) and whoever asks with the key (the sink,
directory sync, reconcile)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import date

import aiohttp
import pytest
from pydantic import SecretStr

from bridge.delivery import Outcome
from bridge.directory.records import Record
from bridge.reconcile.window import Window
from bridge.vendors.mctime.readback import read_entries
from bridge.vendors.mctime.sink import McTimeSink
from bridge.vendors.mctime.users import McTimeUsers
from bridge.vendors.ratelimit import Grant, RateLimiter
from tests.fakes.mctime import FakeMcTime, running_fake_mctime
from tests.test_mctime import API_KEY, HELSINKI, FakeClock, _burst, make_config, make_job

RATE = 100  # per second, at the sink and at the fake: 600 events take ~6 s, not 60
EVENTS = 600
RUNS = 5


# -- the limiter on its own (a fake clock) -----------------------------------------------------


async def test_a_request_in_flight_counts_until_it_ends() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 1.0, clock=clock, sleep=clock.sleep)
    slow, slower = await limiter.acquire(), await limiter.acquire()
    third = asyncio.create_task(limiter.acquire())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not third.done(), "both may still arrive at any moment"
    assert clock.now == 1000.0  # waiting for an end, not sleeping on a guess
    clock.now += 5.0  # one takes five seconds and is answered ...
    slow.done()
    grant = await third  # ... then counts for a whole window from its end
    assert grant.granted == pytest.approx(1005.0 + 1.0)
    assert limiter.in_flight == 2
    slower.done()


async def test_a_late_answer_pushes_the_window() -> None:
    # the old limiter counted grants only: 10 at t=0, the 11th at t=1.0, although the first
    # one may have reached the vendor at t=0.3 (answered then): 11 in (0.3, 1.3]
    clock = FakeClock()
    limiter = RateLimiter(10, 1.0, clock=clock, sleep=clock.sleep)
    grants: list[Grant] = [await limiter.acquire() for _ in range(10)]
    clock.now += 0.3
    for grant in grants:
        grant.done()
    eleventh = await limiter.acquire()
    assert eleventh.granted == pytest.approx(1000.0 + 0.3 + 1.0)


async def test_done_is_idempotent_and_cancelled_waiters_take_nothing() -> None:
    limiter = RateLimiter(1, 0.1)
    grant = await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    grant.done()
    ended = grant.ended
    grant.done()
    assert grant.ended == ended
    assert limiter.in_flight == 0
    await asyncio.wait_for(limiter.acquire(), 1.0)


# -- at the fake, over HTTP --------------------------------------------------------------------


@pytest.fixture
def fake() -> FakeMcTime:
    fake = FakeMcTime(api_key=API_KEY)
    fake.rate_limit = RATE
    return fake


@pytest.fixture
async def base_url(fake: FakeMcTime) -> AsyncIterator[str]:
    async with running_fake_mctime(fake) as url:
        yield url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # Few connections: a request granted by the limiter may wait for one, so it reaches the
    # vendor later than it was let go, as over a slow or congested network.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=3)) as client:
        yield client


def _jitter(fake: FakeMcTime, seed: int) -> None:
    """The fake takes 0-15 ms per answer: the round trip varies from request to request."""
    rng = random.Random(seed)
    handler = fake.post_clock

    async def slow(request: aiohttp.web.Request) -> aiohttp.web.Response:
        await asyncio.sleep(rng.uniform(0, 0.015))
        return await handler(request)

    fake.post_clock = slow  # type: ignore[method-assign]


@pytest.mark.slow
@pytest.mark.parametrize("run", range(RUNS))
async def test_600_event_burst_never_exceeds_the_rate_at_the_vendor(
    session: aiohttp.ClientSession, base_url: str, fake: FakeMcTime, run: int
) -> None:
    _jitter(fake, run)
    sink = McTimeSink(
        session=session, config=make_config(base_url, rate_per_second=RATE), site_tz=HELSINKI
    )
    jobs = [make_job(delivery_id=n, person=f"p{n:03d}") for n in range(EVENTS)]
    results = await _burst(sink, jobs, concurrency=32)
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * EVENTS
    answers = [r["answer"] for r in fake.requests]
    assert answers.count(429) == 0
    assert len(fake.requests) == EVENTS
    assert fake.max_requests_in_any_second() <= RATE


async def test_sink_directory_and_reconcile_share_one_window(
    session: aiohttp.ClientSession, base_url: str, fake: FakeMcTime
) -> None:
    fake.rate_limit = 20
    for n in range(60):
        fake.add_user(f"u{n:02d}", f"User {n}", employeeNumber=str(n))
    config = make_config(base_url, rate_per_second=20)
    sink = McTimeSink(session=session, config=config, site_tz=HELSINKI)
    users = McTimeUsers(
        base_url=base_url,
        api_key=SecretStr(API_KEY),
        timeout=5,
        id_column="mctime_user_id",
        join_on="employee_number",
        vendor_field="employeeNumber",
        rate_per_second=20,
    )
    window = Window(date(2024, 7, 1), date(2024, 7, 1), HELSINKI)
    jobs = [make_job(delivery_id=n, person=f"p{n:02d}") for n in range(40)]

    async def directory() -> None:
        for _ in range(4):
            # the sink's starts add users as it goes: 4 or more pages each
            records: list[Record] = await users.fetch(session)
            assert len(records) >= 60

    async def reconcile() -> None:
        for _ in range(10):
            await read_entries(session, config, window)

    async with asyncio.TaskGroup() as tg:
        sent = tg.create_task(_burst(sink, jobs, concurrency=8))
        tg.create_task(directory())
        tg.create_task(reconcile())
    assert [r.outcome for r in sent.result()] == [Outcome.DELIVERED] * 40
    assert len(fake.gets("/users")) >= 16
    assert len(fake.gets("/times")) == 10
    assert 429 not in [r["answer"] for r in fake.requests]
    assert fake.max_requests_in_any_second() <= 20
