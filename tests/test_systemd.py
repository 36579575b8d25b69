"""The systemd side: the notify protocol over a real datagram socket, the unit file, the unit's
own ExecStart run the way systemd runs it, and the container layout compose.yaml sets up.

A real boot of the unit in a Debian container is tests/test_boot.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import sandbox
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.faults.common import start_bridge
from tests.harness import API_KEY, canonical, wait_until, write_config

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "clockin-bridge.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
NO_SANDBOX = sandbox.unavailable()
# Nothing in common with log text: the redaction masks fragments of secrets too.
BRIDGE_PASSWORD = "Xk4vR9wQ2pL7zJ"
GATE_PASSWORD = "Tn3bW8yH5cM1qD"


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
    text = re.sub(
        r"^ExecStart=\S+", f"ExecStart={sys.executable}", UNIT.read_text(), flags=re.MULTILINE
    )
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


# --- the unit's ExecStart, run as systemd runs it ---------------------------------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    """The [Service] section's settings, each name with its values in order."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            found.setdefault(name, []).append(value)
    return found


def _expand(word: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda match: env[match.group(1)], word)


def exec_start(service: dict[str, list[str]], env: dict[str, str]) -> list[str]:
    """ExecStart as argv, ${VAR} expanded from the service's environment as systemd does; the
    program is the same script from this checkout's virtualenv (the unit names the one in
    /opt/clockin-bridge/.venv, which tests/test_boot.py installs)."""
    (line,) = service["ExecStart"]
    program, *args = shlex.split(line)
    assert program == "/opt/clockin-bridge/.venv/bin/clockin-bridge"
    local = Path(sys.executable).parent / Path(program).name
    return [str(local), *(_expand(arg, env) for arg in args)]


def unit_environment(service: dict[str, list[str]]) -> dict[str, str]:
    pairs = (value.partition("=") for value in service.get("Environment", []))
    return {name: value for name, _, value in pairs}


@contextlib.asynccontextmanager
async def notify_socket(path: Path) -> AsyncIterator[socket.socket]:
    """The service manager's end of $NOTIFY_SOCKET, writable by the service's user."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    path.chmod(0o777)  # as systemd's /run/systemd/notify
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def _assert_private(path: Path) -> None:
    assert path.stat().st_uid == sandbox.NOBODY
    assert path.stat().st_mode & 0o777 == 0o600


def _systemd_environment(service: dict[str, list[str]], root: Path) -> dict[str, str]:
    """What systemd sets for this unit: its Environment=, the three folders, the notify socket
    and the watchdog (1 s here, so pings every 0.5 s)."""
    return sandbox.service_environment(
        {
            **unit_environment(service),
            "CONFIGURATION_DIRECTORY": str(root / "configuration"),
            "STATE_DIRECTORY": str(root / "state"),
            "CREDENTIALS_DIRECTORY": str(root / "credentials"),
            "NOTIFY_SOCKET": str(root / "notify"),
            "WATCHDOG_USEC": "1000000",
        }
    )


def _write_unit_config(config_dir: Path, *, broker_port: int, go2clock_url: str) -> None:
    """Relative paths and credential names only: nothing in it knows the folders."""
    config = write_config(config_dir, broker_port=broker_port, go2clock_url=go2clock_url)
    data = yaml.safe_load(config.read_text())
    data["store"] = {"path": None}
    data["directory"]["path"] = "directory.csv"
    data["mqtt"] |= {"username": "clockin-bridge", "password_file": "mqtt_password"}
    data["sinks"]["go2clock"] |= {"api_key": None, "api_key_file": "go2clock_api_key"}
    config.write_text(yaml.safe_dump(data))
    for path in config_dir.iterdir():
        path.chmod(0o644)


def _write_credentials(folder: Path, secrets: dict[str, str]) -> None:
    """As systemd lays out $CREDENTIALS_DIRECTORY: the service user's, 0500, files 0400."""
    folder.mkdir()
    for name, value in secrets.items():
        (folder / name).write_text(value + "\n")
        sandbox.give(folder / name, 0o400)
    sandbox.give(folder, 0o500)


@pytest.mark.skipif(NO_SANDBOX is not None, reason=f"as a service: {NO_SANDBOX}")
async def test_the_units_exec_start_runs_as_systemd_runs_it(tmp_path: Path):  # noqa: PLR0915
    """ExecStart from the unit, working directory /, user nobody, umask 0077, the unit's
    Environment=, CONFIGURATION_DIRECTORY / STATE_DIRECTORY / CREDENTIALS_DIRECTORY, the notify
    socket and the watchdog: READY, pings, a punch delivered, a SIGHUP reload, a clean stop."""
    root = sandbox.world_folder("clockin-unit-")
    broker = sandbox.broker_with_users(
        tmp_path / "mqtt", {"clockin-bridge": BRIDGE_PASSWORD, "gate1": GATE_PASSWORD}
    )
    try:
        service = unit_settings(UNIT.read_text())
        config_dir, state_dir = root / "configuration", root / "state"
        config_dir.mkdir()
        state_dir.mkdir()
        sandbox.give(state_dir, 0o700)  # StateDirectory=, StateDirectoryMode=0700
        _write_credentials(
            root / "credentials", {"mqtt_password": BRIDGE_PASSWORD, "go2clock_api_key": API_KEY}
        )
        fake = FakeGo2Clock(api_key=API_KEY)
        async with running_fake_go2clock(fake) as url, notify_socket(root / "notify") as sock:
            _write_unit_config(config_dir, broker_port=broker.port, go2clock_url=url)
            before = sorted(path.name for path in config_dir.iterdir())
            env = _systemd_environment(service, root)
            argv = sandbox.service_command(exec_start(service, env), work=root, watchdog_pid=True)
            log = root / "service.log"
            with log.open("wb") as out:
                process = await asyncio.create_subprocess_exec(
                    *argv, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            try:
                seen = await _receive(sock, "READY=1", timeout=20)
                pings = await _receive(sock, "WATCHDOG=1", timeout=2)
                pings += await _receive(sock, "WATCHDOG=1", timeout=2)  # every 0.5 s
                await sandbox.publish_as(
                    broker.port, "gate1", GATE_PASSWORD, "clockin/gate1/events", canonical(1)
                )
                (record,) = await fake.wait_for_records(1, timeout=10)
                process.send_signal(signal.SIGHUP)
                reload = await _receive(sock, "READY=1", timeout=10)
                process.send_signal(signal.SIGTERM)
                last = await _receive(sock, "STOPPING=1", timeout=10)
                code = await asyncio.wait_for(process.wait(), timeout=20)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        text = log.read_text(errors="replace")
        assert code == 0, text[-3000:]
        assert "READY=1" in seen
        assert pings.count("WATCHDOG=1") >= 2
        assert record["userid"] == "1001"
        assert reload.index("RELOADING=1") < reload.index("READY=1"), reload
        assert "STOPPING=1" in last
        assert '"event": "config.reloaded"' in text
        # The database in the state folder, the service user's alone (umask 0077).
        _assert_private(state_dir / "clockin-bridge.db")
        assert sorted(path.name for path in config_dir.iterdir()) == before
        assert API_KEY not in text
        assert BRIDGE_PASSWORD not in text
    finally:
        broker.stop()
        shutil.rmtree(root)


# --- the container layout of compose.yaml and the Dockerfile ----------------------------------


def _dockerfile_env() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env |= dict(pair.split("=", 1) for pair in shlex.split(line[4:]))
    return env


@pytest.mark.skipif(NO_SANDBOX is not None, reason=f"as a container: {NO_SANDBOX}")
async def test_the_compose_layout_runs_from_slash_as_a_non_root_user(tmp_path: Path):
    """The shipped config.yaml and directory.csv mounted at /etc/clockin-bridge, the data
    volume at /var/lib/clockin-bridge, the secrets at /run/secrets, the image's and compose's
    environment, `clockin-bridge run` from / as a non-root user: the relative paths resolve,
    a punch arrives, and `clockin-bridge status` (as `docker exec` runs it) finds the database.
    Only the broker and vendor addresses are the test's."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    bridge = compose["services"]["clockin-bridge"]
    root = sandbox.world_folder("clockin-compose-")
    broker = sandbox.broker_with_users(
        tmp_path / "mqtt", {"clockin-bridge": BRIDGE_PASSWORD, "gate1": GATE_PASSWORD}
    )
    try:
        project, volume = root / "project", root / "clockin-data"
        mounts, read_only = _compose_mounts(compose, project, volume)
        fake = FakeGo2Clock(api_key=API_KEY)
        async with running_fake_go2clock(fake) as url:
            env = sandbox.service_environment(
                {
                    **_dockerfile_env(),
                    **{name: str(value) for name, value in bridge["environment"].items()},
                    # the test's addresses instead of the compose network's
                    "CLOCKIN_MQTT__HOST": "127.0.0.1",
                    "CLOCKIN_MQTT__PORT": str(broker.port),
                    "CLOCKIN_SINKS__GO2CLOCK__BASE_URL": url,
                    "CLOCKIN_HTTP__LISTEN": "127.0.0.1:0",
                    "CLOCKIN_LOG__FORMAT": "json",
                }
            )
            program = str(Path(sys.executable).parent / "clockin-bridge")  # ENTRYPOINT
            run = sandbox.service_command(
                [program, "run"], work=root, mounts=mounts, read_only=read_only
            )
            log = root / "bridge.log"
            with log.open("wb") as out:
                process = await asyncio.create_subprocess_exec(
                    *run, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            try:
                await wait_until(
                    _logged(log, "bridge.ready", process),
                    timeout=20,
                    what="bridge.ready",
                )
                await sandbox.publish_as(
                    broker.port,
                    "gate1",
                    GATE_PASSWORD,
                    "clockin/gate1/events",
                    json.dumps(
                        {"id": "c-1", "badge": "04A1B2C3", "action": "in", "time": _now()}
                    ).encode(),
                )
                (record,) = await fake.wait_for_records(1, timeout=10)
                # Logged once its settle is committed (which may wait for company: up to
                # twice store.commit_wait_seconds after the answer).
                await wait_until(
                    _logged(log, "delivery.sent", process), timeout=10, what="delivery.sent"
                )
                status = sandbox.service_command(
                    [program, "status", "--json"], work=root, mounts=mounts, read_only=read_only
                )
                shown = await asyncio.create_subprocess_exec(
                    *status, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
                out, err = await asyncio.wait_for(shown.communicate(), timeout=30)
            finally:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(process.wait(), timeout=20)
        text = log.read_text(errors="replace")
        assert code == 0, text[-3000:]
        assert record["userid"] == "1001"  # directory.csv beside the config file
        assert shown.returncode == 0, err.decode()
        assert json.loads(out)["sinks"]["go2clock"]["states"]["delivered"] == 1
        database = volume / "clockin-bridge.db"
        assert database.stat().st_uid == sandbox.NOBODY
        assert sorted(path.name for path in project.iterdir()) == [
            "config.yaml",
            "directory.csv",
            "secrets",
        ]
    finally:
        broker.stop()
        shutil.rmtree(root)


def _compose_mounts(
    compose: dict[str, Any], project: Path, volume: Path
) -> tuple[dict[Path, Path], list[Path]]:
    """The project folder as a site has it (the shipped config.yaml and directory.csv, the
    secrets in ./secrets/), and compose's bind mounts, volume and secrets for the bridge."""
    bridge = compose["services"]["clockin-bridge"]
    (project / "secrets").mkdir(parents=True)
    for name in ("config.yaml", "directory.csv"):
        shutil.copy(ROOT / name, project / name)
    secrets = {"mqtt_password": BRIDGE_PASSWORD, "go2clock_api_key": API_KEY}
    assert set(bridge["secrets"]) == set(secrets)
    for name, value in secrets.items():
        assert compose["secrets"][name]["file"] == f"./secrets/{name}"
        (project / "secrets" / name).write_text(value + "\n")  # as deploy/mqtt-user.sh
        (project / "secrets" / name).chmod(0o644)
    volume.mkdir()
    sandbox.give(volume, 0o755)  # the image chowns it to its user
    mounts: dict[Path, Path] = {}
    read_only: list[Path] = []
    for spec in bridge["volumes"]:
        source, target, *options = spec.split(":")
        mounts[Path(target)] = project / source if source.startswith("./") else volume
        if "ro" in options:
            read_only.append(Path(target))
    for name in bridge["secrets"]:
        mounts[Path("/run/secrets") / name] = project / "secrets" / name
    return mounts, read_only


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def _logged(log: Path, event: str, process: asyncio.subprocess.Process):
    async def predicate() -> bool:
        if process.returncode is not None:
            msg = f"the bridge exited with {process.returncode}: {log.read_text()[-3000:]}"
            raise AssertionError(msg)
        return f'"event": "{event}"' in log.read_text(errors="replace")

    return predicate
