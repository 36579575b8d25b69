"""One bridge per database: a second `run` on the same database exits 2 naming the first one's
PID and sends nothing; the lock goes with its holder, even when that one is SIGKILLed."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from bridge.store.lock import daemon_lock, holder, lock_path
from tests.broker import Mosquitto, free_port
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.faults.common import assert_exactly_once_in_order, logged, start_bridge
from tests.harness import API_KEY, canonical, publish, wait_until, write_config

TOPIC = "clockin/gate1/events"


async def _run_to_exit(config: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_a_second_bridge_on_the_same_database_exits_2_and_sends_nothing(
    broker: Mosquitto, tmp_path: Path
):
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        extra = {"http": {"listen": f"127.0.0.1:{free_port()}"}}
        config = write_config(tmp_path, broker_port=broker.port, go2clock_url=url, extra=extra)
        log = tmp_path / "first.log"
        first = await start_bridge(config, log)
        try:
            await wait_until(logged(log, "bridge.ready"), timeout=30, what="first bridge ready")
            # The same config: the same database (and client id, and port).
            code, err = await _run_to_exit(config)
            assert code == 2, err
            assert f"PID {first.pid}" in err
            assert "one bridge per database" in err
            assert len(err.strip().splitlines()) == 1, err
            # Another port changes nothing: the database decides.
            (tmp_path / "other").mkdir()
            other = write_config(
                tmp_path / "other",
                broker_port=broker.port,
                go2clock_url=url,
                extra={
                    "http": {"listen": "127.0.0.1:0"},
                    "store": {"path": str(tmp_path / "bridge.db")},
                },
            )
            code, err = await _run_to_exit(other)
            assert code == 2, err
            assert f"PID {first.pid}" in err

            await publish(broker.port, [(TOPIC, canonical(n)) for n in range(40)])
            await fake.wait_for_records(40, timeout=30)
            await asyncio.sleep(0.5)  # room for a second send to show
        finally:
            first.send_signal(signal.SIGTERM)
            await asyncio.wait_for(first.wait(), timeout=30)
    assert len(fake.requests) == 40, "a punch was sent more than once"
    assert_exactly_once_in_order(fake, 40)


async def test_the_lock_goes_with_a_killed_holder(broker: Mosquitto, tmp_path: Path):
    async with running_fake_go2clock(FakeGo2Clock(api_key=API_KEY)) as url:
        config = write_config(tmp_path, broker_port=broker.port, go2clock_url=url)
        log = tmp_path / "bridge.log"
        first = await start_bridge(config, log)
        await wait_until(logged(log, "bridge.ready"), timeout=30, what="bridge ready")
        db = tmp_path / "bridge.db"
        assert holder(db) == first.pid
        first.kill()
        await first.wait()
        assert holder(db) is None  # no stale lock after a crash or a power cut
        second = await start_bridge(config, log)
        try:
            await wait_until(logged(log, "bridge.ready", 2), timeout=30, what="restart ready")
            assert holder(db) == second.pid
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.wait(), timeout=30)


def test_the_lock_file_is_private_and_holds_the_pid(tmp_path: Path) -> None:
    import os

    db = tmp_path / "bridge.db"
    with daemon_lock(db):
        assert holder(db) == os.getpid()
        assert lock_path(db).stat().st_mode & 0o777 == 0o600
    assert holder(db) is None
