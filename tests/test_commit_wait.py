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
from bridge.store import Incoming, Store
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import (
    API_KEY,
    canonical,
    running_bridge,
    settings_from,
    write_config,
)
from tests.test_store import SINK, everyone, ingest, swipe

TOPIC = "clockin/gate1/events"
BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def _query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


@pytest.mark.parametrize("wait", [0.0, 1.5])
async def test_swipes_within_the_wait_share_one_commit_and_are_answered_at_once(
    broker: Mosquitto, tmp_path: Path, wait: float
):
    """Three swipes 0.2 s apart. With the wait, another reader of the file sees none of them
    and then all three (one commit), yet each terminal hears "accepted" at once, long before
    that commit (the answer is decided in the open transaction; only the PUBACK waits for the
    commit). Without it, a commit each. Every punch is delivered once."""
    fake = FakeGo2Clock(api_key=API_KEY)
    db = tmp_path / "bridge.db"
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
            await terminal.subscribe("clockin/gate1/ack", qos=1)
            seen: set[int] = set()
            answered: list[float] = []
            loop = asyncio.get_running_loop()
            for n in range(3):
                sent = loop.time()
                await terminal.publish(TOPIC, canonical(n), qos=1)
                async with asyncio.timeout(5):
                    async for message in terminal.messages:
                        assert b'"accepted"' in bytes(message.payload)
                        answered.append(loop.time() - sent)
                        break
                if wait:
                    seen.add(_query(db, "SELECT COUNT(*) FROM events")[0][0])
                else:  # each is committed on its own, before the next swipe
                    async with asyncio.timeout(2):
                        while _query(db, "SELECT COUNT(*) FROM events") != [(n + 1,)]:
                            await asyncio.sleep(0.01)
                await asyncio.sleep(0.2)
            async with asyncio.timeout(10):
                while _query(db, "SELECT COUNT(*) FROM events") != [(3,)]:
                    await asyncio.sleep(0.02)
            await fake.wait_for_records(3, timeout=15)
    assert max(answered) < 0.5, answered  # not the commit wait: 1.5 s
    if wait:
        assert seen == {0}, seen  # nothing committed until the window closed, then all three
    assert set(fake.punches_by_key().values()) == {1}


async def test_claims_and_settles_that_need_no_flush_join_the_next_ingest(tmp_path: Path):
    """A Go2Clock claim and its settle are not committed on their own while swipes come in:
    they wait (up to twice the commit wait) for an ingest's open transaction and are committed
    with it. Until then the file shows the delivery as the last commit left it, which after a
    crash or power cut means a resend the vendor answers as a duplicate
    (bridge/store/durability.py)."""
    path = tmp_path / "q.db"
    async with Store.open(path, site_tz=BERLIN, commit_wait_seconds=1.0) as store:
        await ingest(store, swipe("a", T0, badge="B1"))

        async def swipe_now(key: str, hours: int) -> asyncio.Future[None]:
            incoming = Incoming(swipe(key, T0 + timedelta(hours=hours), badge=key), TOPIC)
            _, stored = await store.ingest_now(
                [incoming], resolve=everyone, received_at=datetime.now(UTC)
            )
            return stored

        claiming = asyncio.ensure_future(
            store.claim(SINK, limit=10, now=time.time(), resend_harmless=True)
        )
        await asyncio.sleep(0.3)
        assert not claiming.done()  # waiting for company
        stored = await swipe_now("b", 1)
        (job,) = await asyncio.wait_for(claiming, timeout=5)
        await asyncio.wait_for(stored, timeout=5)
        # One transaction: the claim is in the file together with swipe b, not before it.
        assert _query(path, f"SELECT state FROM deliveries WHERE id = {job.delivery_id}") == [
            ("inflight",)
        ]
        assert _query(path, "SELECT COUNT(*) FROM events") == [(2,)]

        settling = asyncio.ensure_future(
            store.settle(job, Result.delivered(), retry_at=0.0, now=time.time())
        )
        await asyncio.sleep(0.3)
        assert not settling.done()
        # Not in the file yet: another reader still sees the claim's state.
        assert _query(path, f"SELECT state FROM deliveries WHERE id = {job.delivery_id}") == [
            ("inflight",)
        ]
        stored = await swipe_now("c", 2)
        await asyncio.wait_for(settling, timeout=5)
        assert _query(path, f"SELECT state FROM deliveries WHERE id = {job.delivery_id}") == [
            ("delivered",)
        ]
        await asyncio.wait_for(stored, timeout=5)


async def test_savepoint_journals_stay_in_memory(tmp_path: Path):
    """Every write runs in savepoints; their sub-journals spilled to files in /var/tmp (four
    times the WAL's bytes per swipe, measured). The daemon keeps them in memory."""
    async with (
        Store.open(tmp_path / "q.db", site_tz=BERLIN) as store,
        store._db.execute("PRAGMA temp_store") as cursor,
    ):
        assert tuple(await cursor.fetchone()) == (2,)  # MEMORY
