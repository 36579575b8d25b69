"""`clockin-bridge simulate VENDOR`: a vendor simulator on its own, taking the config's
credentials, that a bridge with the same config delivers to."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from bridge.commands.simulate import VENDORS, _local_port
from tests.broker import Mosquitto
from tests.harness import (
    canonical,
    publish,
    running_bridge,
    settings_from,
    wait_until,
    write_config,
)

TOPIC = "clockin/gate1/events"


async def _start_simulator(config: Path, vendor: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "simulate",
        vendor,
        "--port",
        "0",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
    assert f"{vendor} simulator on http://127.0.0.1:" in line, line
    return proc, line.split(" on ", 1)[1].split()[0]


async def test_a_bridge_delivers_to_the_go2clock_simulator(broker: Mosquitto, tmp_path: Path):
    key = "site-key-from-the-config"
    config = write_config(
        tmp_path,
        broker_port=broker.port,
        go2clock_url="http://127.0.0.1:9",  # replaced below, once the simulator has a port
        extra={"sinks": {"go2clock": {"api_key": key}}},
    )
    simulator, url = await _start_simulator(config, "go2clock")
    try:
        config = write_config(
            tmp_path,
            broker_port=broker.port,
            go2clock_url=url,
            extra={"sinks": {"go2clock": {"api_key": key}}},
        )
        settings = settings_from(config)
        async with running_bridge(settings):
            await publish(broker.port, [(TOPIC, canonical(1))])

            async def delivered() -> bool:
                with contextlib.closing(sqlite3.connect(settings.store.path)) as db:
                    states = db.execute("SELECT state FROM deliveries").fetchall()
                return states == [("delivered",)]

            await wait_until(delivered, timeout=15, what="the punch delivered to the simulator")
    finally:
        simulator.send_signal(signal.SIGINT)
        await asyncio.wait_for(simulator.wait(), timeout=10)
    assert simulator.returncode == 0


@pytest.mark.parametrize("vendor", sorted(VENDORS))
async def test_every_vendor_has_a_simulator_that_starts_and_stops(tmp_path: Path, vendor: str):
    config = write_config(tmp_path, broker_port=1, go2clock_url="http://127.0.0.1:9")
    simulator, url = await _start_simulator(config, vendor)
    simulator.send_signal(signal.SIGTERM)
    await asyncio.wait_for(simulator.wait(), timeout=10)
    assert simulator.returncode == 0
    assert url.startswith("http://127.0.0.1:")


def test_the_default_port_comes_from_a_local_base_url() -> None:
    assert _local_port("http://127.0.0.1:8089") == 8089
    assert _local_port("http://localhost:8090/api") == 8090
    assert _local_port("https://mctime.com/api/v2/auth") == 0  # not this machine: a free port
