"""Three bridges on one PostgreSQL database and one mosquitto, sharing the terminals' messages
(issue 16): 10,000 punches of 500 people from 5 terminals, one bridge SIGKILLed at random points
three times (restarted each time) and once for good (its claims come back through the lease).
Every punch reaches Go2Clock exactly once and in per-person order; McTime holds exactly one
closed entry with one break per shift and no clock left running.

The bridges run with the environment of deploy/cluster/compose.yaml; only addresses, ids and the
lease (short, so the test does not wait half a minute) are the test's. FAULTS_HEAVY=1 runs the
issue's size (500 people, 10,000 punches; 4 min 45 s on a loaded 2-core machine); the default
suite runs 100 people (2,000 punches) through the same kills.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
import yaml

from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.fakes.mctime import FakeMcTime, running_fake_mctime
from tests.faults.common import HEAVY, assert_exactly_once_in_order, start_bridge
from tests.harness import API_KEY, publish, wait_until
from tests.postgres import fresh_database

ROOT = Path(__file__).resolve().parent.parent
BERLIN = ZoneInfo("Europe/Berlin")
PEOPLE = 500 if HEAVY else 100
TERMINALS = 5
DAYS = 5
SHIFT = [("in", 8, 0), ("break_start", 12, 0), ("break_end", 12, 30), ("out", 16, 30)]
INSTANCES = 3
LEASE_SECONDS = 3


def _compose_environment() -> dict[str, str]:
    """The bridge service's environment in deploy/cluster/compose.yaml, as compose passes it
    ($$ is compose's escape for $)."""
    compose = yaml.safe_load((ROOT / "deploy/cluster/compose.yaml").read_text())
    return {
        name: str(value).replace("$$", "$")
        for name, value in compose["services"]["bridge"]["environment"].items()
    }


def _badge(n: int) -> str:
    return f"C{n:04d}"


def _write_directory(path: Path) -> None:
    rows = ["badge,userid,name,mctime_user_id"]
    rows += [f"{_badge(n)},{5000 + n},Person {n},mc-{n}" for n in range(PEOPLE)]
    path.write_text("\n".join(rows) + "\n")


def _punches(day: int, step: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """Step `step` of day `day` for everyone, each from a terminal of the five."""
    action, hour, minute = SHIFT[step]
    when = datetime(2026, 11, 23 + day, hour, minute, tzinfo=BERLIN)
    messages = []
    for n in range(PEOPLE):
        terminal = f"term-{rng.randrange(TERMINALS)}"
        payload = {"id": f"{n}-{day}-{step}", "badge": _badge(n), "action": action}
        payload["time"] = when.isoformat()
        messages.append((f"clockin/{terminal}/events", json.dumps(payload).encode()))
    return messages


def _config(tmp_path: Path, n: int, *, urls: dict[str, str]) -> Path:
    home = tmp_path / f"bridge-{n}"
    home.mkdir()
    config: dict[str, Any] = {
        "site": {"timezone": "Europe/Berlin"},
        "store": {"path": str(home / "local.db")},  # the heartbeat file's folder only
        "directory": {"path": str(tmp_path / "directory.csv")},
        "retry": {"initial_seconds": 0.2, "max_seconds": 2, "max_age_days": 400},
        "sinks": {
            "go2clock": {"enabled": True, "base_url": urls["go2clock"], "api_key": API_KEY},
            "mctime": {
                "enabled": True,
                "base_url": urls["mctime"],
                "api_key": "mc-key",
                "rate_per_second": 500,
            },
        },
        "log": {"level": "info", "format": "json"},
        "http": {"listen": "127.0.0.1:0"},
    }
    path = home / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _environment(n: int, *, broker: Mosquitto, database: str, secret: Path) -> dict[str, str]:
    env = _compose_environment()
    env.update(
        {
            "CLOCKIN_MQTT__HOST": "127.0.0.1",
            "CLOCKIN_MQTT__PORT": str(broker.port),
            "CLOCKIN_MQTT__USERNAME": "",
            "CLOCKIN_MQTT__CLIENT_ID": f"cluster-bridge-{n}",
            "CLOCKIN_STORE__URL": database,
            "CLOCKIN_STORE__PASSWORD_FILE": str(secret),
            "CLOCKIN_STORE__INSTANCE_ID": f"gw-{n}",
            "CLOCKIN_STORE__LEASE_SECONDS": str(LEASE_SECONDS),
        }
    )
    for name in ("CLOCKIN_MQTT__PASSWORD_FILE", "CLOCKIN_SINKS__GO2CLOCK__API_KEY_FILE"):
        env.pop(name)  # the test's broker has no users; the key is in config.yaml
    return env


async def _count(database: str, sql: str) -> int:
    async with await psycopg.AsyncConnection.connect(database) as conn:
        row = await (await conn.execute(sql)).fetchone()
    return 0 if row is None else int(row[0])


@pytest.mark.slow
async def test_three_bridges_share_the_work_through_kills(
    broker: Mosquitto, tmp_path: Path
) -> None:
    rng = random.Random(16)
    total = PEOPLE * DAYS * len(SHIFT)
    _write_directory(tmp_path / "directory.csv")
    secret = tmp_path / "postgres_password"
    secret.write_text("unused-with-trust-auth\n")
    go2clock, mctime = FakeGo2Clock(api_key=API_KEY), FakeMcTime("mc-key")
    mctime.rate_limit = 10_000
    with fresh_database() as database:
        async with (
            running_fake_go2clock(go2clock) as g_url,
            running_fake_mctime(mctime) as m_url,
        ):
            urls = {"go2clock": g_url, "mctime": m_url}
            configs = [_config(tmp_path, n, urls=urls) for n in range(INSTANCES)]
            envs = [
                _environment(n, broker=broker, database=database, secret=secret)
                for n in range(INSTANCES)
            ]
            logs = [tmp_path / f"bridge-{n}.log" for n in range(INSTANCES)]
            procs = [await start_bridge(configs[n], logs[n], env=envs[n]) for n in range(INSTANCES)]
            try:
                await _run(procs, configs, envs, logs, database, broker, rng, go2clock, total)
            finally:
                for proc in procs:
                    if proc.returncode is None:
                        proc.send_signal(signal.SIGTERM)
                for proc in procs:
                    await asyncio.wait_for(proc.wait(), timeout=30)
    assert_exactly_once_in_order(go2clock, total)
    _assert_one_closed_entry_per_shift(mctime)


async def _run(
    procs: list[asyncio.subprocess.Process],
    configs: list[Path],
    envs: list[dict[str, str]],
    logs: list[Path],
    database: str,
    broker: Mosquitto,
    rng: random.Random,
    go2clock: FakeGo2Clock,
    total: int,
) -> None:
    async def stored(count: int) -> bool:
        return await _count(database, "SELECT COUNT(*) FROM events") >= count

    await wait_until(lambda: _all_ready(logs), timeout=60, what="three bridges ready")
    steps = [(day, step) for day in range(DAYS) for step in range(len(SHIFT))]
    kill_at = sorted(rng.sample(range(1, len(steps)), 3))
    for number, (day, step) in enumerate(steps):
        await publish(broker.port, _punches(day, step, rng))
        if number in kill_at:  # at a random point of the step's storing and sending
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            victim = rng.randrange(INSTANCES)
            procs[victim].send_signal(signal.SIGKILL)
            await procs[victim].wait()
            procs[victim] = await start_bridge(configs[victim], logs[victim], env=envs[victim])
        # Punches are hours apart in life: the next step comes once this one is stored.
        await wait_until(lambda n=number: stored((n + 1) * PEOPLE), timeout=90, what="stored")

    # Once more, and for good: its claims come back to the two others when the lease runs out.
    async def sending() -> bool:
        return len(go2clock.records) >= total // 2

    await wait_until(sending, timeout=120, what="half delivered")
    procs[0].send_signal(signal.SIGKILL)
    await procs[0].wait()

    async def delivered() -> bool:
        undelivered = await _count(
            database, "SELECT COUNT(*) FROM deliveries WHERE state != 'delivered'"
        )
        return undelivered == 0 and len(go2clock.records) >= total

    await wait_until(delivered, timeout=240, what="every punch delivered")
    await asyncio.sleep(1.0)  # anything extra would arrive now


async def _all_ready(logs: list[Path]) -> bool:
    return all(
        log.exists() and '"event": "bridge.ready"' in log.read_text(errors="replace")
        for log in logs
    )


def _assert_one_closed_entry_per_shift(mctime: FakeMcTime) -> None:
    assert mctime.clocks == {}, f"{len(mctime.clocks)} clocks left running"
    per_person: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in mctime.entries:
        per_person[entry["userId"]].append(entry)
    assert len(per_person) == PEOPLE
    for user, entries in per_person.items():
        days = sorted(entry["from"].date() for entry in entries)
        assert len(days) == DAYS == len(set(days)), f"{user}: {len(entries)} entries"
        for entry in entries:
            assert len(entry["breaks"]) == 1, f"{user}: {entry['breaks']}"
            assert entry["to"] is not None
