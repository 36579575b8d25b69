"""A terminal (or an attacker on the site LAN) floods the bridge with junk: memory, /metrics and
the database stay bounded, and a valid swipe still gets through.

The bridge runs as a real process, so its RSS is its own; mosquitto and the fake Go2Clock are
real too. The measured figures are printed (run with -s) and recorded in docs/FAULTS.md.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import paho.mqtt.client as mqtt
import pytest

from bridge.store.connection import WAL_SIZE_LIMIT
from tests.broker import Mosquitto, free_port
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.faults.common import HEAVY, logged, start_bridge
from tests.harness import API_KEY, canonical, publish, wait_until, write_config

pytestmark = pytest.mark.slow

FLOOD = 100_000
RSS_SLACK_MB = 20
METRICS_MAX_BYTES = 100_000
CAP_MB = 2


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """The suite's broker saving its store every minute instead of every second: the flood
    keeps it busy enough."""
    mosquitto = Mosquitto(tmp_path / "broker")
    text = mosquitto.config.read_text()
    mosquitto.config.write_text(text.replace("autosave_interval 1\n", "autosave_interval 60\n"))
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


def publish_flood(port: int, payloads: list[tuple[str, bytes]]) -> None:
    """Publish with QoS 1 as fast as the broker takes it (paho, 1,000 in flight)."""
    acked = 0
    done = threading.Event()

    def on_publish(*_args: object) -> None:
        nonlocal acked
        acked += 1
        if acked >= len(payloads):
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flooder")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    try:
        for i, (topic, payload) in enumerate(payloads):
            while i - acked > 30_000:  # MQTT message ids are 16 bits
                time.sleep(0.005)
            client.publish(topic, payload, qos=1)
        assert done.wait(120), f"only {acked} of {len(payloads)} acknowledged"
    finally:
        client.loop_stop()
        client.disconnect()


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match
    return int(match.group(1)) / 1024


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def messages_counted(metrics: str) -> float:
    """Every message the bridge has handled: clockin_events_total over all its labels."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("clockin_events_total{")
    )


async def get_metrics(http_port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{http_port}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


def junk(n: int) -> list[tuple[str, bytes]]:
    """n messages, each on a new random topic level, half of them not even JSON."""
    return [
        (
            f"clockin/{secrets.token_hex(10)}/events",
            b"\x1b[31mnot json" if i % 2 else json.dumps({"badge": "", "terminal": "#"}).encode(),
        )
        for i in range(n)
    ]


async def test_a_junk_flood_leaves_memory_metrics_and_disk_bounded(
    broker: Mosquitto, tmp_path: Path
):
    http_port = free_port()
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        config = write_config(
            tmp_path,
            broker_port=broker.port,
            go2clock_url=url,
            extra={
                "http": {"listen": f"127.0.0.1:{http_port}"},
                "store": {"rejected_max_mb": CAP_MB},
            },
        )
        log = tmp_path / "bridge.log"
        bridge = await start_bridge(config, log)
        try:
            await wait_until(logged(log, "bridge.ready"), timeout=30, what="bridge ready")
            db = tmp_path / "bridge.db"
            # Warm-up: the first messages import and build what every later one reuses.
            await asyncio.to_thread(publish_flood, broker.port, junk(1_000))
            await wait_until(_counted(http_port, 1_000), timeout=60, what="the warm-up handled")
            idle_rss, idle_file = rss_mb(bridge.pid), db.stat().st_size

            peak = idle_rss
            flood = asyncio.create_task(asyncio.to_thread(publish_flood, broker.port, junk(FLOOD)))
            began = time.monotonic()
            while not (flood.done() and await _counted(http_port, 1_000 + FLOOD)()):
                peak = max(peak, rss_mb(bridge.pid))
                await asyncio.sleep(0.2)
                assert time.monotonic() - began < 240, "the flood was not handled in 4 minutes"
            await flood
            seconds = time.monotonic() - began
            peak = max(peak, rss_mb(bridge.pid))
            metrics = await get_metrics(http_port)

            # A valid swipe still gets through, once.
            await publish(broker.port, [("clockin/gate1/events", canonical(1))])
            await fake.wait_for_records(1, timeout=15)
            grown = db.stat().st_size - idle_file
            wal = db_bytes(db) - db.stat().st_size
            print(
                f"\nflood of {FLOOD} junk messages in {seconds:.1f} s: RSS idle {idle_rss:.1f} MB,"
                f" peak {peak:.1f} MB (+{peak - idle_rss:.1f}); /metrics {len(metrics)} bytes;"
                f" database file +{grown / 1e6:.2f} MB (cap {CAP_MB} MB), WAL {wal / 1e6:.2f} MB"
            )
            assert peak - idle_rss <= RSS_SLACK_MB
            assert len(metrics) < METRICS_MAX_BYTES
            # The file grows by at most the cap (rows and indexes add a little); the WAL is
            # cut back to WAL_SIZE_LIMIT at each checkpoint.
            assert grown <= CAP_MB * 1024 * 1024 * 1.1 + 256 * 1024
            assert wal <= WAL_SIZE_LIMIT + 500 * 16 * 1024
            assert 'terminal="other"' in metrics
            assert "clockin_rejected_not_kept_total" in metrics
            assert '"event": "terminal.flooding"' in log.read_text()
            assert len(fake.records) == 1
            assert bridge.returncode is None, "the bridge restarted or died"
        finally:
            bridge.terminate()
            await bridge.wait()


@pytest.mark.parametrize("count", [3_000 if not HEAVY else 20_000])
async def test_big_junk_with_the_rate_limits_lifted_stays_within_the_cap(
    broker: Mosquitto, tmp_path: Path, count: int
):
    """Every junk message stored (the per-minute limits opened wide): the database file still
    grows by at most store.rejected_max_mb, however much arrives (3,000 x 16 KiB = 48 MB here),
    and its WAL stays bounded too."""
    http_port = free_port()
    async with running_fake_go2clock(FakeGo2Clock(api_key=API_KEY)) as url:
        config = write_config(
            tmp_path,
            broker_port=broker.port,
            go2clock_url=url,
            extra={
                "http": {"listen": f"127.0.0.1:{http_port}"},
                "store": {
                    "rejected_max_mb": CAP_MB,
                    "rejected_per_terminal_per_minute": 10**9,
                    "rejected_per_minute": 10**9,
                },
            },
        )
        log = tmp_path / "bridge.log"
        bridge = await start_bridge(config, log)
        try:
            await wait_until(logged(log, "bridge.ready"), timeout=30, what="bridge ready")
            db = tmp_path / "bridge.db"
            before = db_bytes(db)
            big = b"\xff" * (16 * 1024)  # not UTF-8: rejected, and kept whole (16 KiB)
            await asyncio.to_thread(
                publish_flood, broker.port, [("clockin/gate9/events", big)] * count
            )
            await wait_until(_counted(http_port, count), timeout=120, what="all handled")
            grown = db_bytes(db) - before
            wal = db_bytes(db) - db.stat().st_size
            print(
                f"\n{count} x 16 KiB junk stored: database +{grown / 1e6:.2f} MB"
                f" (of which WAL {wal / 1e6:.2f} MB; cap {CAP_MB} MB)"
            )
            # The cap counts payload bytes; rows and indexes add a little on top.
            assert db.stat().st_size - before <= CAP_MB * 1024 * 1024 * 1.1 + 512 * 1024
            # The WAL is cut back to WAL_SIZE_LIMIT after each checkpoint; between two it holds
            # at most what was written since (a batch of 500 x 16 KiB is 8 MB).
            assert wal <= WAL_SIZE_LIMIT + 500 * 16 * 1024
            assert bridge.returncode is None
        finally:
            bridge.terminate()
            await bridge.wait()


def _counted(http_port: int, n: int):
    async def predicate() -> bool:
        return messages_counted(await get_metrics(http_port)) >= n

    return predicate
