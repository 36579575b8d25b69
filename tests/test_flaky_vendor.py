"""A flaky vendor is not a dead one, through the real dispatcher, the real Go2Clock sink and
the fake Go2Clock over HTTP: when one PUT in ten is answered HTTP 500, those people's deliveries
wait for their own retry while everyone else's keep going, and no outage is declared; when the
connection is refused, the outage is declared at once and the sink probes one request at a
time. A 429 with Retry-After holds the whole sink. (The state machine alone: test_sink_health.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
from pydantic import SecretStr
from structlog.testing import capture_logs

from bridge.config import Go2ClockConfig, RetryConfig
from bridge.delivery import Result
from bridge.dispatch.pump import Dispatcher
from bridge.ops.metrics import Metrics
from bridge.store import Store
from bridge.vendors.go2clock.sink import Go2ClockSink
from tests.broker import free_port
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import eventually
from tests.test_dispatch import RecordingSink, swipes
from tests.test_store import opened, query

API_KEY = "flaky-test-key"
PEOPLE = 200
CONCURRENCY = 4
# A failed delivery's own retry (and an outage's first probe) comes no sooner than 60 s, half
# of 120: within a test, every person whose PUT was answered 500 stays pending, and every other
# person is delivered.
RETRY = RetryConfig(initial_seconds=120, max_seconds=300)


@contextlib.asynccontextmanager
async def dispatching(store: Store, base_url: str) -> AsyncIterator[Dispatcher]:
    async with aiohttp.ClientSession() as session:
        config = Go2ClockConfig(base_url=base_url, api_key=SecretStr(API_KEY), timeout_seconds=5)
        sink = Go2ClockSink(session=session, config=config, account_tz=ZoneInfo("Europe/Berlin"))
        dispatcher = Dispatcher(
            sink=sink, store=store, concurrency=CONCURRENCY, retry=RETRY, metrics=Metrics()
        )
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop, grace_seconds=5))
        try:
            yield dispatcher
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)


def states(db: Path) -> dict[str, int]:
    return dict(query(db, "SELECT state, COUNT(*) FROM deliveries GROUP BY state"))


def sink_lines(logs: list[dict[str, object]]) -> Counter[object]:
    return Counter(entry["event"] for entry in logs if str(entry["event"]).startswith("sink."))


async def test_one_put_in_ten_answered_500_holds_back_only_those_people(tmp_path: Path):
    db = tmp_path / "q.db"
    fake = FakeGo2Clock(api_key=API_KEY)
    fake.fail_500_share = 0.10
    with capture_logs() as logs:
        async with opened(db) as store, running_fake_go2clock(fake) as url:
            await swipes(store, people=PEOPLE)
            async with dispatching(store, url) as dispatcher:
                await eventually(lambda: len(fake.requests) >= PEOPLE, timeout=30)
                failed = sum(1 for r in fake.requests if r["answer"] == "http_500")
                await eventually(lambda: len(fake.records) == PEOPLE - failed, timeout=30)
                assert not dispatcher.health.failing
                assert dispatcher.health.state()["state"] == "sending"
    # Some PUTs did fail (the test means something), and each failed person waits for their
    # own retry, attempted once; nobody else's delivery was held back or handed back.
    assert 5 <= failed <= 40
    assert len(fake.requests) == PEOPLE, "a delivery was sent twice or retried at once"
    assert states(db) == {"delivered": PEOPLE - failed, "pending": failed}
    assert query(db, "SELECT DISTINCT attempts FROM deliveries") == [(1,)]
    assert sink_lines(logs) == Counter(), "a flaky vendor was declared down"


async def test_a_refused_connection_declares_the_outage_and_probes_one_at_a_time(tmp_path: Path):
    db = tmp_path / "q.db"
    nothing_listens = f"http://127.0.0.1:{free_port()}"
    with capture_logs() as logs:
        async with opened(db) as store:
            await swipes(store, people=PEOPLE)
            async with dispatching(store, nothing_listens) as dispatcher:
                await eventually(lambda: dispatcher.health.failing, timeout=10)
                await asyncio.sleep(1.0)  # long enough for a flood of retries, were there one
                state = dispatcher.health.state()
    assert state["state"] == "retrying"
    assert "connect" in (state["last_error"] or "").lower()
    assert sink_lines(logs) == Counter({"sink.outage_started": 1})
    # the first wave (the requests in flight when the first refusal came) and nothing after:
    # the probe gate is 60-120 s away; everything claimed ahead went back unsent
    attempts = query(db, "SELECT SUM(attempts) FROM deliveries")[0][0]
    assert 1 <= attempts <= CONCURRENCY
    assert states(db) == {"pending": PEOPLE}


async def test_a_429_with_retry_after_holds_every_persons_delivery(tmp_path: Path):
    """Other people's work claimed ahead is handed back unsent, without an outage."""
    db = tmp_path / "q.db"
    sink = RecordingSink(answer=lambda _job: Result.retry("HTTP 429 Too Many Requests", 30.0))
    sink.gate = asyncio.Event()
    with capture_logs() as logs:
        async with opened(db) as store:
            await swipes(store, people=12)
            dispatcher = Dispatcher(
                sink=sink, store=store, concurrency=2, retry=RETRY, metrics=Metrics()
            )
            stop = asyncio.Event()
            task = asyncio.create_task(dispatcher.run(stop, grace_seconds=5))
            await eventually(lambda: len(sink.sent) == 2, timeout=10)
            await asyncio.sleep(0.2)  # the claim ahead is in
            sink.gate.set()
            await asyncio.sleep(0.5)
            failing = dispatcher.health.failing
            stop.set()
            await asyncio.wait_for(task, 15)
    assert len(sink.sent) == 2, "a delivery was sent while the vendor asked to wait"
    assert not failing
    assert sink_lines(logs) == Counter()
    assert query(db, "SELECT SUM(attempts) FROM deliveries")[0][0] == 2
