"""An honest status: `clockin-bridge status` says whether the daemon runs (its lock and
heartbeat), the broker connection and each sink's state; the page shows a sink failing for
more than a minute as degraded, with the reason and since when."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from bridge.dispatch import health as sink_health
from bridge.ops import heartbeat
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.faults.common import logged, start_bridge
from tests.harness import (
    API_KEY,
    canonical,
    publish,
    running_bridge,
    settings_from,
    wait_until,
    write_config,
)

TOPIC = "clockin/gate1/events"


def _beat(*, pid: int, written_at: float) -> heartbeat.Heartbeat:
    return {
        "pid": pid,
        "version": "0.1.0",
        "started_at": written_at - 3600,
        "written_at": written_at,
        "mqtt": {"connected": True, "since": None, "last_error": None},
        "sinks": {},
    }


def test_the_daemons_state_from_its_lock_and_heartbeat() -> None:
    now = 1_000_000.0
    assert heartbeat.daemon_state(None, holder=None, now=now)["state"] == "not running"
    fresh = _beat(pid=42, written_at=now - 5)
    running = heartbeat.daemon_state(fresh, holder=42, now=now)
    assert running["state"] == "running"
    assert "PID 42, up 60 min" in running["detail"]
    stale = _beat(pid=42, written_at=now - heartbeat.STALE_AFTER_SECONDS - 1)
    wedged = heartbeat.daemon_state(stale, holder=42, now=now)
    assert wedged["state"] == "not responding"
    assert "last heartbeat 31 s ago" in wedged["detail"]
    # A heartbeat left by an earlier process says nothing about the one holding the lock now.
    assert heartbeat.daemon_state(fresh, holder=43, now=now)["state"] == "not responding"
    # A lock nobody holds: whatever file is left, the daemon is not running.
    assert heartbeat.daemon_state(fresh, holder=None, now=now)["state"] == "not running"


async def _status(config: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "status",
        "--config",
        str(config),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.mark.slow
async def test_status_says_whether_the_daemon_runs_and_how(broker: Mosquitto, tmp_path: Path):
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        config = write_config(tmp_path, broker_port=broker.port, go2clock_url=url)
        log = tmp_path / "bridge.log"
        bridge = await start_bridge(config, log)
        try:
            await wait_until(logged(log, "bridge.ready"), timeout=30, what="bridge ready")
            await publish(broker.port, [(TOPIC, canonical(1))])
            await fake.wait_for_records(1, timeout=15)
            # The first heartbeat is written at start, before the broker connects: wait for one
            # written after.
            beat_file = heartbeat.heartbeat_path(tmp_path / "bridge.db")

            async def connected_beat() -> bool:
                beat = heartbeat.read(beat_file)
                return beat is not None and beat["mqtt"]["connected"]

            await wait_until(connected_beat, timeout=heartbeat.HEARTBEAT_SECONDS + 5, what="beat")
            text = await _status(config)
            assert f"daemon: running (PID {bridge.pid}, up " in text
            assert "mqtt: connected" in text
            assert "sink go2clock: sending" in text
            data = json.loads(await _status(config, "--json"))
            assert data["daemon"]["state"] == "running"
            assert data["daemon"]["heartbeat"]["pid"] == bridge.pid
            assert data["sinks"]["go2clock"]["states"] == {"delivered": 1}
        finally:
            bridge.send_signal(signal.SIGTERM)
            await asyncio.wait_for(bridge.wait(), timeout=30)
    text = await _status(config)
    assert "daemon: not running" in text
    assert not beat_file.exists()


async def test_a_sink_failing_for_over_a_minute_shows_as_degraded(
    broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(sink_health, "DEGRADED_AFTER_SECONDS", 0.5)  # a minute, shortened
    fake = FakeGo2Clock(api_key=API_KEY)
    fake.fail_5xx = 10_000
    async with running_fake_go2clock(fake) as url:
        settings = settings_from(write_config(tmp_path, broker_port=broker.port, go2clock_url=url))
        async with running_bridge(settings) as bridge:
            await publish(broker.port, [(TOPIC, canonical(1))])

            async def state_is(name: str):
                async def check() -> bool:
                    return bridge.sink_states()["go2clock"]["state"] == name

                return check

            await wait_until(await state_is("retrying"), timeout=10, what="retrying")
            await wait_until(await state_is("degraded"), timeout=10, what="degraded")
            state = bridge.sink_states()["go2clock"]
            assert state["since"] is not None
            assert "503" in (state["last_error"] or "")
            from bridge.ops.web import describe

            assert describe(state).startswith("degraded since ")
            # /readyz keeps its rule: a vendor outage is not the bridge being unready.
            assert not [p for p in bridge.readiness_problems() if p["check"].startswith("sink")]
            fake.fail_5xx = 0
            await fake.wait_for_records(1, timeout=15)
            await wait_until(await state_is("sending"), timeout=10, what="sending again")
