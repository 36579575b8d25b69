"""People on call read the logs: an outage is one line when it starts, a summary every
`log.summary_seconds`, one line when it ends, and never a line per retry per event."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

from structlog.testing import capture_logs

from bridge.config import RetryConfig
from bridge.delivery import Result
from bridge.dispatch.health import SinkHealth
from bridge.ops.metrics import Metrics
from bridge.store import Store
from tests.broker import Mosquitto, free_port
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import API_KEY, canonical, publish, running_bridge, settings_from, write_config

EVENTS = 1000
# Time is compressed 60:1: a 5-minute outage with 60-second summaries becomes 5 s with 1 s.
OUTAGE_SECONDS = 5.0
SUMMARY_SECONDS = 1.0


async def test_a_five_minute_outage_with_a_thousand_events_logs_a_handful_of_lines(
    broker: Mosquitto, tmp_path: Path
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    fake = FakeGo2Clock(api_key=API_KEY)
    config = write_config(
        tmp_path,
        broker_port=broker.port,
        go2clock_url=url,
        extra={
            "log": {"summary_seconds": SUMMARY_SECONDS},
            "retry": {"initial_seconds": 0.2, "max_seconds": 1.0},
            "sinks": {"go2clock": {"concurrency": 16}},
        },
    )
    with capture_logs() as logs:
        async with running_bridge(settings_from(config)):
            # Go2Clock is unreachable (connection refused) while 1,000 swipes come in.
            began = time.monotonic()
            await publish(
                broker.port, [("clockin/dock/events", canonical(n)) for n in range(EVENTS)]
            )
            await asyncio.sleep(OUTAGE_SECONDS)
            # The outage began with the first swipe, so it lasts as long as publishing took
            # too (seconds on a busy machine).
            outage = time.monotonic() - began
            async with running_fake_go2clock(fake, port=port):
                await fake.wait_for_records(EVENTS, timeout=60)
                await asyncio.sleep(0.5)
    names = Counter(entry["event"] for entry in logs if entry["log_level"] != "debug")
    assert names["sink.outage_started"] == 1
    assert names["sink.outage_ended"] == 1
    # one summary a second, give or take the first and last (and the probe that ends it)
    assert OUTAGE_SECONDS - 2 <= names["sink.outage_summary"] <= outage / SUMMARY_SECONDS + 3
    assert names["delivery.retry"] == 0
    summaries = [entry for entry in logs if entry["event"] == "sink.outage_summary"]
    summary = summaries[-1]  # the first may come while ingest is still storing the burst
    assert summary["backlog"] == EVENTS
    assert (
        "ClientConnectorError" in summary["last_error"]
        or "connect" in summary["last_error"].lower()
    )
    # what is left is the ordinary line per event stored and per event delivered
    outage_lines = sum(v for k, v in names.items() if k.startswith("sink."))
    assert outage_lines <= outage / SUMMARY_SECONDS + 5
    assert len(fake.punches_by_key()) == EVENTS
    # The failing sink was probed one request at a time (after the first wave of 16 requests
    # in flight), not retried by each of the 200 people with queued punches.
    attempts = sum(1 for entry in logs if entry["event"] == "delivery.retry")
    assert attempts <= 16 + 2 * outage


async def test_an_outage_that_ends_while_its_summary_is_read_ends_quietly(tmp_path: Path):
    """The summary reads the backlog from the store; an answer that ends the outage meanwhile
    must not crash the pump (it did: `time.time() - None`, and the bridge stopped)."""
    sink = SinkHealth(
        sink="go2clock",
        retry=RetryConfig(initial_seconds=0.2, max_seconds=1.0),
        summary_seconds=0.0,
        metrics=Metrics(),
    )
    sink.record(Result.retry("Connect call failed", unreachable=True))
    assert sink.failing
    async with Store.open(tmp_path / "bridge.db", site_tz=ZoneInfo("UTC")) as store:
        with capture_logs() as logs:
            summary = asyncio.create_task(sink.summarize_if_due(store))
            await asyncio.sleep(0)  # the summary is now waiting for the store
            sink.record(Result.delivered())
            assert await summary is None
    assert [entry["event"] for entry in logs] == ["sink.outage_ended"]
