"""`clockin-bridge backup` while the daemon ingests: the copy opens, passes integrity_check, and
holds every event committed before the backup began."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import sys
from pathlib import Path

import aiomqtt
import pytest

from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.faults.common import logged, start_bridge
from tests.harness import API_KEY, canonical, wait_until, write_config

TOPIC = "clockin/gate1/events"
EVENTS = 1_000


def _keys(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as conn:
        return {row[0] for row in conn.execute("SELECT key FROM events")}


async def _backup(config: Path, target: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "backup",
        str(target),
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _stream(port: int) -> None:
    """EVENTS swipes at ~100 a second: still streaming when the backup is done."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for n in range(EVENTS):
            await client.publish(TOPIC, canonical(n), qos=1)
            await asyncio.sleep(0.01)


@pytest.mark.slow
async def test_backup_during_a_stream_holds_everything_committed_before_it(
    broker: Mosquitto, tmp_path: Path
):
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        config = write_config(tmp_path, broker_port=broker.port, go2clock_url=url)
        log = tmp_path / "bridge.log"
        bridge = await start_bridge(config, log)
        db = tmp_path / "bridge.db"
        try:
            await wait_until(logged(log, "bridge.ready"), timeout=30, what="bridge ready")
            stream = asyncio.create_task(_stream(broker.port))

            async def some_stored() -> bool:
                return len(_keys(db)) >= 100

            await wait_until(some_stored, timeout=30, what="the stream to be under way")
            before = _keys(db)  # committed before the backup began
            code, out, err = await _backup(config, tmp_path / "copy.db")
            during = not stream.done()
            await stream
        finally:
            bridge.send_signal(signal.SIGTERM)
            await asyncio.wait_for(bridge.wait(), timeout=30)
    assert code == 0, err
    assert "integrity ok" in out
    copy = tmp_path / "copy.db"
    assert copy.stat().st_mode & 0o777 == 0o600
    with contextlib.closing(sqlite3.connect(copy)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one file
    assert before <= _keys(copy), "an event committed before the backup is missing"
    assert during, "the stream had ended before the backup: nothing was proven"


async def test_backup_without_a_database_says_so(tmp_path: Path):
    config = write_config(tmp_path, broker_port=1, go2clock_url="http://127.0.0.1:9")
    code, _out, err = await _backup(config, tmp_path / "copy.db")
    assert code == 1
    assert "no database at" in err
    assert not (tmp_path / "copy.db").exists()
