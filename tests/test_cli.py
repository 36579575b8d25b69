"""The command line as an operator meets it: `python -m bridge ...` in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

import bridge
from bridge.cli import main
from bridge.delivery import Result
from bridge.events import Action, ClockEvent
from bridge.store import Incoming, Rejection, Store
from tests.broker import free_port

REPO = Path(__file__).resolve().parents[1]
SECRET = "g2c-SECRET-key-5b81e0"
SINK = "go2clock"
MORNING = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)


# --- helpers -------------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """This environment without the developer's own CLOCKIN_* settings, bridge importable."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CLOCKIN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli(*args: str, cwd: Path, command: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    command = list(command) or [sys.executable, "-m", "bridge"]
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]


# --- configuration errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ({"site": {"timezone": "Mars/Base"}}, ["site.timezone", "Mars/Base"]),
        ({"sinks": {"go2clock": {"enabled": True}}}, ["sinks.go2clock", "api_key"]),
        ({"mqtt": {"port": 70000}}, ["mqtt.port"]),
        ({"log": {"level": "loud"}}, ["log.level"]),
        ({"store": {"pth": "x.db"}}, ["store.pth"]),
    ],
)
@pytest.mark.parametrize("command", ["run", "status"])
def test_a_bad_value_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, command: str, config: dict[str, Any], names: list[str]
) -> None:
    result = cli(command, "--config", str(write_config(tmp_path, config)), cwd=tmp_path)
    if command == "status" and "api_key" in names:
        # status talks to no vendor and does not need the key (tests/test_command_config.py):
        # what stops it here is that no bridge has made a database yet.
        assert result.returncode == 1, result.stderr
        assert "no database" in result.stderr
        return
    assert result.returncode == 2, result.stderr
    line = one_line(result.stderr)
    assert line.startswith("clockin-bridge: config error:")
    for name in names:
        assert name in line
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "clockin-bridge.db").exists(), "nothing is started on a bad config"


@pytest.mark.parametrize(
    "wrong",
    [
        {"site": {"timezone": "Mars/Base"}},
        {"sinks": {"go2clock": {"base_url": "ftp://go2clock.example"}}},
        {"sinks": {"go2clock": {"timeout_seconds": -1}}},
        {"sinks": {"go2clock": {"api_kee": SECRET}}},  # the secret again, under a typo
        {"mqtt": {"password": SECRET, "port": 0}},
    ],
)
def test_a_set_api_key_never_appears_when_another_key_is_wrong(
    tmp_path: Path, wrong: dict[str, Any]
) -> None:
    config: dict[str, Any] = {"sinks": {"go2clock": {"enabled": True, "api_key": SECRET}}}
    for section, values in wrong.items():
        config.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, dict):
                config[section].setdefault(key, {}).update(value)
            else:
                config[section][key] = value
    result = cli("run", "--config", str(write_config(tmp_path, config)), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    one_line(result.stderr)
    assert SECRET not in result.stderr + result.stdout


# --- status --------------------------------------------------------------------------------


def swipe(n: int, *, action: Action = Action.IN) -> ClockEvent:
    return ClockEvent(
        key=f"e{n}",
        terminal="door-1",
        badge=f"B{n}",
        user=None,
        action=action,
        time=MORNING + timedelta(minutes=n),
        time_given=True,
    )


async def prepare_queue(path: Path) -> None:
    """3 delivered, 1 dead, 2 pending (one of them retried), 1 held, 1 rejected payload."""
    async with Store.open(path, site_tz=ZoneInfo("Europe/Berlin")) as store:
        await store.ingest(
            [Incoming(swipe(n), "clockin/door-1/events") for n in range(7)]
            + [Rejection("clockin/door-1/events", "canonical", b"{", "not JSON", MORNING)],
            resolve=lambda event: {SINK: f"p-{event.badge}"},
            received_at=MORNING,
        )
        now = time.time()
        jobs = await store.claim(SINK, limit=10, now=now)
        assert len(jobs) == 7
        outcomes = [
            Result.delivered(),
            Result.delivered(),
            Result.duplicate(),
            Result.dead("400"),
            Result.retry("503"),
            Result.retry("503"),
            Result.held("no open shift"),
        ]
        for job, result in zip(jobs, outcomes, strict=True):
            await store.settle(job, result, retry_at=now, now=now)
        [again] = await store.claim(SINK, limit=1, now=now + 1)
        await store.settle(again, Result.retry("503"), retry_at=now + 3600, now=now)


def status_config(tmp_path: Path, db: Path) -> Path:
    return write_config(
        tmp_path, {"site": {"timezone": "Europe/Berlin"}, "store": {"path": str(db)}}
    )


def table_row(table: str, sink: str) -> dict[str, str]:
    """The sink's row of the status table, keyed by the header's column names."""
    lines = table.splitlines()
    header = next(line.split() for line in lines if line.split()[:1] == ["sink"])
    row = next(line.split() for line in lines if line.split()[:1] == [sink])
    return dict(zip(header, row, strict=True))


async def test_status_json(tmp_path: Path) -> None:
    db = tmp_path / "data" / "queue.db"
    await prepare_queue(db)
    result = cli("status", "--config", str(status_config(tmp_path, db)), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    entry = status["sinks"][SINK]
    assert entry["states"] == {"delivered": 3, "dead": 1, "pending": 2, "held": 1}
    assert isinstance(entry["oldest_pending_seconds"], float)
    assert entry["oldest_pending_seconds"] >= 0
    assert status["events"] == {"accepted": 7}
    assert (status["rejected"], status["retried"]) == (1, 1)


async def test_status_table(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    await prepare_queue(db)
    result = cli("status", "--config", str(status_config(tmp_path, db)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    row = table_row(result.stdout, SINK)
    assert {k: row[k] for k in ("pending", "inflight", "unmapped", "delivered", "dead")} == {
        "pending": "2",
        "inflight": "0",
        "unmapped": "0",
        "delivered": "3",
        "dead": "1",
    }
    assert "rejected payloads: 1" in result.stdout
    assert "deliveries retried: 1" in result.stdout
    assert "accepted 7" in result.stdout


async def test_status_table_shows_held_deliveries(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    await prepare_queue(db)
    result = cli("status", "--config", str(status_config(tmp_path, db)), cwd=tmp_path)
    assert table_row(result.stdout, SINK).get("held") == "1"


async def test_status_table_of_an_empty_queue(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    async with Store.open(db, site_tz=ZoneInfo("Europe/Berlin")):
        pass
    result = cli("status", "--config", str(status_config(tmp_path, db)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "events: none" in result.stdout.splitlines()


def test_status_without_a_database(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "queue.db"
    result = cli("status", "--config", str(status_config(tmp_path, db)), "--json", cwd=tmp_path)
    assert result.returncode != 0
    line = one_line(result.stderr)
    assert "no database" in line
    assert str(db) in line
    assert result.stdout == ""
    assert not db.parent.exists(), "status must not create a database"


# --- run without a broker ------------------------------------------------------------------


async def read_lines_for(stream: asyncio.StreamReader, seconds: float, into: list[str]) -> None:
    deadline = time.monotonic() + seconds
    with contextlib.suppress(TimeoutError):
        while (left := deadline - time.monotonic()) > 0:
            line = await asyncio.wait_for(stream.readline(), timeout=left)
            if not line:
                return
            into.append(line.decode())


def unreachable_broker_config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path,
        {
            "site": {"timezone": "Europe/Berlin"},
            "mqtt": {"host": "127.0.0.1", "port": free_port()},  # nothing listens there
            "store": {"path": str(tmp_path / "queue.db")},
            "sinks": {
                "go2clock": {
                    "enabled": True,
                    "api_key": SECRET,
                    "base_url": f"http://127.0.0.1:{free_port()}",
                }
            },
            "http": {"enabled": False},
            "log": {"level": "info", "format": "json"},
        },
    )


@contextlib.asynccontextmanager
async def bridge_without_broker(tmp_path: Path) -> AsyncIterator[tuple[Process, list[str]]]:
    """`run` against a dead broker, once it has logged mqtt.unreachable (within 4 s of start).

    Yields the process and the stdout lines read so far; the process is killed afterwards.
    """
    config = unreachable_broker_config(tmp_path)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "run",
        "--config",
        str(config),
        cwd=tmp_path,
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        while not any("mqtt.unreachable" in line for line in lines):
            await read_lines_for(proc.stdout, 0.1, lines)
            assert proc.returncode is None, f"the bridge exited: {lines}"
            assert time.monotonic() - started < 4, f"no mqtt.unreachable within 4 s: {lines}"
        yield proc, lines
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def json_events(lines: list[str]) -> list[str]:
    """The event names of JSON log lines; fails on a line that is not a JSON object."""
    records = [json.loads(line) for line in lines if line.strip()]
    assert all(isinstance(record, dict) and "event" in record for record in records), records
    return [record["event"] for record in records]


async def test_run_without_a_broker_stays_up_and_logs_the_outage_once(tmp_path: Path) -> None:
    async with bridge_without_broker(tmp_path) as (proc, lines):
        assert proc.stdout is not None
        # reconnect attempts follow after 1 s and 3 s: they must not log the outage again
        await read_lines_for(proc.stdout, 3.5, lines)
        assert proc.returncode is None, "the bridge must stay up without its broker"
        proc.kill()
        stdout, stderr = await proc.communicate()
    lines += stdout.decode().splitlines()
    assert json_events(lines).count("mqtt.unreachable") == 1, lines
    assert SECRET not in "".join(lines) + stderr.decode()


async def test_run_without_a_broker_exits_0_on_sigterm(tmp_path: Path) -> None:
    async with bridge_without_broker(tmp_path) as (proc, lines):
        proc.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=15)
        except TimeoutError:
            pytest.fail("still running 15 s after SIGTERM")
    assert proc.returncode == 0, stderr.decode()
    lines += stdout.decode().splitlines()
    assert json_events(lines)[-2:] == ["bridge.stopping", "bridge.stopped"]
    assert SECRET not in "".join(lines) + stderr.decode()


# --- version and entry points --------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    result = cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"clockin-bridge {bridge.__version__}"
    assert bridge.__version__ == project["version"]


def test_the_console_script_is_bridge_cli_main() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    module, _, function = project["scripts"]["clockin-bridge"].partition(":")
    entry = getattr(__import__(module, fromlist=[function]), function)
    assert entry is main


# What setuptools' console script wrapper for `bridge.cli:main` does.
CONSOLE_SCRIPT = [sys.executable, "-c", "import sys; from bridge.cli import main; sys.exit(main())"]


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["--help"],
        [],  # no command: a usage error
        ["status", "--config", "missing.yaml"],
        ["status", "--config", "config.yaml"],
    ],
)
def test_python_m_bridge_is_the_console_script(tmp_path: Path, args: list[str]) -> None:
    write_config(tmp_path, {"store": {"path": str(tmp_path / "none.db")}})
    by_module = cli(*args, cwd=tmp_path)
    by_script = cli(*args, cwd=tmp_path, command=CONSOLE_SCRIPT)
    # argparse names the program after argv[0] only when prog is not fixed; ours is fixed
    assert (by_module.returncode, by_module.stdout, by_module.stderr) == (
        by_script.returncode,
        by_script.stdout,
        by_script.stderr,
    )
    installed = Path(sys.executable).parent / "clockin-bridge"
    if installed.exists():
        by_installed = cli(*args, cwd=tmp_path, command=[str(installed)])
        assert (by_installed.returncode, by_installed.stdout) == (
            by_module.returncode,
            by_module.stdout,
        )


def test_main_in_process_returns_the_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, {"site": {"timezone": "Mars/Base"}})
    assert main(["status", "--config", str(config)]) == 2
    assert "site.timezone" in capsys.readouterr().err
