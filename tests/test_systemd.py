"""The systemd side: the notify protocol over a real datagram socket, and the unit file."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.faults.common import start_bridge
from tests.harness import API_KEY, write_config

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "clockin-bridge.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


async def _receive(sock: socket.socket, wanted: str, timeout: float) -> list[str]:
    """Datagrams until one equals `wanted`."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while wanted not in seen:
            data = await loop.sock_recv(sock, 4096)
            seen.append(data.decode())
    return seen


async def test_ready_watchdog_and_stopping_reach_the_notify_socket(
    broker: Mosquitto, tmp_path: Path
):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        config = write_config(tmp_path, broker_port=broker.port, go2clock_url=url)
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
        process = await start_bridge(config, None, env=env)
        asked_to_stop = False
        try:
            first = await _receive(sock, "READY=1", timeout=20)
            pings = await _receive(sock, "WATCHDOG=1", timeout=2)
            more = await _receive(sock, "WATCHDOG=1", timeout=2)  # every 0.2 s, from the loop
            process.send_signal(signal.SIGTERM)
            asked_to_stop = True
            last = await _receive(sock, "STOPPING=1", timeout=10)
        finally:
            # Once only: a second SIGTERM that lands after the event loop has closed (its
            # handlers gone) ends the process by the signal, as systemd would expect anyway.
            if not asked_to_stop:
                process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), timeout=20)
            sock.close()
    assert "READY=1" in first
    assert "WATCHDOG=1" in pings + more
    assert "STOPPING=1" in last
    assert code == 0


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_unit_verifies_and_rates_ok_on_exposure(tmp_path: Path):
    # verify wants ExecStart's program to exist: point it at this interpreter.
    unit = tmp_path / "clockin-bridge.service"
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable}", UNIT.read_text(), flags=re.M)
    unit.write_text(text)
    assert SYSTEMD_ANALYZE is not None
    verify = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert "clockin-bridge.service" not in verify.stderr, verify.stderr
    security = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", security.stdout)
    assert score, security.stdout[-2000:] + security.stderr
    assert float(score.group(1)) <= 2.0, security.stdout
    assert score.group(2) == "OK"
