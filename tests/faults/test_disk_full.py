"""The disk under the database fills up: the bridge stops acknowledging, so the broker keeps the
events; /readyz says why; once there is room again everything flows, exactly once.

Needs root to mount a small tmpfs; skipped, saying so, where that is not possible."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.faults.common import assert_exactly_once_in_order
from tests.harness import (
    API_KEY,
    canonical,
    publish,
    running_bridge,
    settings_from,
    wait_until,
    write_config,
)

TOPIC = "clockin/store/events"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(disk: Path) -> Path:
    """Take all the free space but a few KiB."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 4096)
    return filler


async def _readyz(port: int | None) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/readyz") as response,
    ):
        return response.status, await response.text()


@pytest.mark.slow
async def test_disk_full_holds_events_at_the_broker_until_there_is_room(
    broker: Mosquitto, small_disk: Path, tmp_path: Path
):
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        config = write_config(
            tmp_path,
            broker_port=broker.port,
            go2clock_url=url,
            extra={"store": {"path": str(small_disk / "bridge.db")}},
        )
        settings = settings_from(config)
        async with running_bridge(settings) as bridge:
            await publish(broker.port, [(TOPIC, canonical(n)) for n in range(20)])
            await fake.wait_for_records(20, timeout=10)

            filler = await asyncio.to_thread(_fill, small_disk)
            await publish(broker.port, [(TOPIC, canonical(n)) for n in range(20, 520)])
            await wait_until(
                _not_ready_because_of_database(bridge.http_port),
                timeout=20,
                what="/readyz naming the database",
            )
            assert len(fake.records) < 520

            filler.unlink()  # an operator makes room
            await fake.wait_for_records(520, timeout=60)
            await wait_until(_ready(bridge.http_port), timeout=20, what="ready again")
    assert_exactly_once_in_order(fake, 520)


def _not_ready_because_of_database(port: int | None):
    async def predicate() -> bool:
        status, body = await _readyz(port)
        return status == 503 and '"check": "database"' in body and "full" in body

    return predicate


def _ready(port: int | None):
    async def predicate() -> bool:
        return (await _readyz(port))[0] == 200

    return predicate
