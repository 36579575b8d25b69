"""store.commit_wait_seconds: writes wait a little to share a commit (one flush, and one copy of
each page touched, for all of them), which is what keeps the bytes written per swipe down
(issue 15; bench/io_per_event.py). The guarantees stay: a message is acknowledged only after
the commit that holds it (tests/faults/ run with the shipped wait: SIGKILL and power cuts)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiomqtt
import pytest

from bridge.delivery import Result
from bridge.store import Store
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import (
    API_KEY,
    canonical,
    running_bridge,
    settings_from,
    write_config,
)
from tests.test_store import SINK, ingest, swipe

TOPIC = "clockin/gate1/events"
BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def _query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


@pytest.mark.parametrize(("wait", "commits"), [(0.0, 3), (1.5, 1)])
async def test_swipes_within_the_wait_are_stored_in_one_commit(
    broker: Mosquitto, tmp_path: Path, wait: float, commits: int
):
    """Three swipes 0.2 s apart: with the wait, one batch (one received_at, one transaction)
    and every punch delivered once; without it, a commit each."""
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        config = write_config(
            tmp_path,
            broker_port=broker.port,
            go2clock_url=url,
            extra={"store": {"commit_wait_seconds": wait}},
        )
        async with (
            running_bridge(settings_from(config)),
            aiomqtt.Client("127.0.0.1", broker.port) as terminal,
        ):
            for n in range(3):
                await terminal.publish(TOPIC, canonical(n), qos=1)
                await asyncio.sleep(0.2)
            await fake.wait_for_records(3, timeout=15)
    db = tmp_path / "bridge.db"
    batches = _query(db, "SELECT COUNT(DISTINCT received_at) FROM events")
    assert batches == [(commits,)]
    assert set(fake.punches_by_key().values()) == {1}


async def test_claims_and_settles_that_need_no_flush_join_the_next_ingest(tmp_path: Path):
    """A Go2Clock claim and its settle are not committed on their own while an ingest is near:
    they wait (here up to 30 s) and go out in the next ingest's transaction. Until then the
    file shows the delivery as the last commit left it, which after a crash or power cut means
    a resend the vendor answers as a duplicate (bridge/store/durability.py)."""
    path = tmp_path / "q.db"
    async with Store.open(path, site_tz=BERLIN, commit_wait_seconds=30.0) as store:
        await ingest(store, swipe("a", T0, badge="B1"))
        claiming = asyncio.ensure_future(
            store.claim(SINK, limit=10, now=time.time(), resend_harmless=True)
        )
        await asyncio.sleep(0.3)
        assert not claiming.done()  # waiting for company
        began = time.monotonic()
        await ingest(store, swipe("b", T0 + timedelta(hours=1), badge="B2"))
        (job,) = await asyncio.wait_for(claiming, timeout=5)
        assert time.monotonic() - began < 5  # went out with the ingest, not after 30 s
        assert _query(path, f"SELECT state FROM deliveries WHERE id = {job.delivery_id}") == [
            ("inflight",)
        ]

        settling = asyncio.ensure_future(
            store.settle(job, Result.delivered(), retry_at=0.0, now=time.time())
        )
        await asyncio.sleep(0.3)
        assert not settling.done()
        # Not in the file yet: another reader still sees the claim's state.
        assert _query(path, f"SELECT state FROM deliveries WHERE id = {job.delivery_id}") == [
            ("inflight",)
        ]
        await ingest(store, swipe("c", T0 + timedelta(hours=2), badge="B3"))
        await asyncio.wait_for(settling, timeout=5)
        assert _query(path, f"SELECT state FROM deliveries WHERE id = {job.delivery_id}") == [
            ("delivered",)
        ]


async def test_savepoint_journals_stay_in_memory(tmp_path: Path):
    """Every write runs in savepoints; their sub-journals spilled to files in /var/tmp (four
    times the WAL's bytes per swipe, measured). The daemon keeps them in memory."""
    async with (
        Store.open(tmp_path / "q.db", site_tz=BERLIN) as store,
        store._db.execute("PRAGMA temp_store") as cursor,
    ):
        assert tuple(await cursor.fetchone()) == (2,)  # MEMORY
