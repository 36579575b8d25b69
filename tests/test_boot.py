"""The README's "Install on a gateway", run step by step in a booted Debian 12.

A Debian root (debootstrap, cached as a tarball: tests/nspawn.py) boots systemd as PID 1 with
systemd-nspawn; every shell block of the README section runs in it, as written (only `sudo`
dropped: the steps run as root), and the YAML block is merged into the installed config.yaml
with the test's broker and vendor addresses. Then, through systemctl and journalctl: the unit
is active and READY, a punch arrives at the (fake) vendor, `systemctl reload` reloads,
`clockin-bridge status` run by an operator reads the service's database, and a wedged bridge
(SIGSTOP, with a 2 s watchdog in a drop-in) is killed by the watchdog and restarted.

The broker (mosquitto with passwords) and the fake Go2Clock run on the host, on free ports of
127.0.0.1; the container shares the host's network. pip installs from wheels built on the host
(PIP_NO_INDEX, PIP_FIND_LINKS in the step's environment): the same command, no PyPI needed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import nspawn, sandbox
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import API_KEY, event_time

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Install on a gateway"
BRIDGE_PASSWORD = "Wm7pK2xN9qR4sV"
GATE_PASSWORD = "Hd6tY3cL8fB5nJ"
NOT_HERE = nspawn.unavailable()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(NOT_HERE is not None, reason=f"booting a container: {NOT_HERE}"),
]


def readme_blocks() -> list[tuple[str, str]]:
    """The section's sh and yaml blocks in order: (language, text). (Its Docker part shows
    commands in plain blocks: tests/test_systemd.py runs that layout.)"""
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else None]
    return re.findall(r"```(sh|yaml)\n(.*?)```", section, flags=re.DOTALL)


def _project_copy(target: Path) -> None:
    """README step 2's "copy the project folder": the checkout, without what git ignores."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "var", "__pycache__", "*.egg-info", "build", ".hypothesis", "*.db*"
    )
    shutil.copytree(ROOT, target, ignore=ignore, symlinks=True)


def _wheelhouse(target: Path) -> None:
    """The project's dependencies (and setuptools for its build) as wheels, from the host's
    own package index; the container installs from them."""
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "-c", str(ROOT / "constraints.txt")),
            *("-w", str(target), str(ROOT), "setuptools>=68", "wheel"),
        ],
        check=True,
        capture_output=True,
    )


def _edit_config(path: Path, readme_yaml: str, *, broker_port: int, vendor: str) -> None:
    """Step 3's edit: the README's keys, with this test's addresses."""
    config = yaml.safe_load(path.read_text())
    edits = yaml.safe_load(readme_yaml)
    edits["mqtt"] |= {"host": "127.0.0.1", "port": broker_port}
    edits["sinks"]["go2clock"]["base_url"] = vendor
    edits["http"] = {"listen": "127.0.0.1:0"}  # the host's network: no fixed port
    edits["log"] = {"format": "json"}
    for section, values in edits.items():
        _merge(config.setdefault(section, {}), values)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _swipe(n: int) -> bytes:
    """Ada Lovelace's badge in the shipped directory.csv (userid 1001)."""
    action = "in" if n % 2 else "out"
    payload = {
        "id": f"boot-{n}",
        "badge": "04A1B2C3",
        "action": action,
        "time": event_time(n).isoformat(),
    }
    return json.dumps(payload).encode()


def _secret_for(block: str) -> str:
    found = re.search(r"cat > /etc/clockin-bridge/credentials/(\w+)", block)
    if found is None:
        return ""
    return {"mqtt_password": BRIDGE_PASSWORD, "go2clock_api_key": API_KEY}[found.group(1)]


async def test_install_on_a_gateway_as_the_readme_says(tmp_path: Path):
    started = time.monotonic()
    try:
        tarball = await asyncio.to_thread(nspawn.root_tarball)
    except nspawn.RootUnavailableError as err:
        pytest.skip(str(err))
    work = sandbox.world_folder("clockin-boot-")
    container = nspawn.Container(work / "root", f"clockin-{os.getpid()}")
    broker = sandbox.broker_with_users(
        tmp_path / "mqtt", {"clockin-bridge": BRIDGE_PASSWORD, "gate1": GATE_PASSWORD}
    )
    timings: dict[str, float] = {}
    try:
        await asyncio.to_thread(nspawn.unpack, tarball, container.root)
        await asyncio.to_thread(_wheelhouse, container.root / "var" / "tmp" / "wheelhouse")
        await asyncio.to_thread(_project_copy, container.root / "opt" / "clockin-bridge")
        timings["prepared"] = time.monotonic() - started
        mark = time.monotonic()
        await container.boot()
        timings["boot"] = time.monotonic() - mark
        fake = FakeGo2Clock(api_key=API_KEY)
        async with running_fake_go2clock(fake) as vendor:
            outputs = await _run_readme(container, broker.port, vendor, fake)
            timings["readme"] = time.monotonic() - mark
            await _check_reload(container, outputs["reload"])
            await _check_watchdog_restart(container, broker.port, fake)
    finally:
        await container.power_off()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    timings["total"] = time.monotonic() - started
    print("boot test timings (s):", {name: round(value, 1) for name, value in timings.items()})


async def _run_readme(
    container: nspawn.Container, broker_port: int, vendor: str, fake: FakeGo2Clock
) -> dict[str, str]:
    """Every block of the section in order; returns the outputs the checks look at."""
    pip_offline = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/var/tmp/wheelhouse"}  # noqa: S108 - inside the container
    outputs: dict[str, str] = {}
    blocks = readme_blocks()
    assert [language for language, _ in blocks].count("yaml") == 1
    for language, block in blocks:
        if language == "yaml":
            config = container.root / "etc" / "clockin-bridge" / "config.yaml"
            _edit_config(config, block, broker_port=broker_port, vendor=vendor)
            continue
        script = re.sub(r"^sudo ", "", block, flags=re.MULTILINE)
        if "clockin-bridge status" in script:
            # The gateway at work: a terminal's punch, before the operator looks.
            await sandbox.publish_as(
                broker_port, "gate1", GATE_PASSWORD, "clockin/gate1/events", _swipe(1)
            )
            (record,) = await fake.wait_for_records(1, timeout=15)
            assert record["userid"] == "1001"
            await _wait_for_journal(container, '"event": "delivery.sent"')
        done = await container.run(script, stdin=_secret_for(script), env=pip_offline)
        if "systemctl status" in script:
            outputs["check"] = done.stdout
        if "systemctl reload" in script:
            outputs["reload"] = done.stdout
    check = outputs["check"]
    assert "Active: active (running)" in check, check
    assert '"event": "bridge.ready"' in check, check
    assert re.search(r"^go2clock\s+0\s+0\s+0\s+0\s+1\s", check, flags=re.MULTILINE), (
        check
    )  # delivered 1
    # The database is where the state folder is; the credentials never reach the journal.
    journal = await container.run("journalctl -u clockin-bridge --no-pager -o cat")
    assert API_KEY not in journal.stdout
    assert BRIDGE_PASSWORD not in journal.stdout
    state = await container.run("ls -l /var/lib/private/clockin-bridge/clockin-bridge.db")
    assert state.stdout.startswith("-rw-------"), state.stdout
    return outputs


async def _wait_for_journal(container: nspawn.Container, text: str, *, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while True:
        journal = await container.run("journalctl -u clockin-bridge --no-pager -o cat")
        if text in journal.stdout:
            return journal.stdout
        if time.monotonic() > deadline:
            msg = f"no {text} in the journal within {timeout} s:\n{journal.stdout[-3000:]}"
            raise AssertionError(msg)
        await asyncio.sleep(0.2)


async def _check_reload(container: nspawn.Container, _output: str) -> None:
    journal = await _wait_for_journal(container, '"event": "config.reloaded"')
    assert "Reloaded clockin-bridge.service" in journal, journal[-2000:]
    active = await container.run("systemctl is-active clockin-bridge")
    assert active.stdout.strip() == "active"


async def _main_pid(container: nspawn.Container) -> int:
    shown = await container.run("systemctl show -p MainPID --value clockin-bridge")
    return int(shown.stdout.strip())


async def _check_watchdog_restart(
    container: nspawn.Container, broker_port: int, fake: FakeGo2Clock
) -> None:
    """A bridge whose event loop stops (SIGSTOP) misses its pings: with WatchdogSec=2 in a
    drop-in, systemd aborts it, kills it and starts it again, and the new one delivers."""
    await container.run(
        "mkdir -p /etc/systemd/system/clockin-bridge.service.d\n"
        "printf '[Service]\\nWatchdogSec=2\\nTimeoutAbortSec=2\\nRestartSec=1\\n'"
        " > /etc/systemd/system/clockin-bridge.service.d/watchdog.conf\n"
        "systemctl daemon-reload\n"
        "systemctl restart clockin-bridge"
    )
    wedged = await _main_pid(container)
    await container.run(f"kill -STOP {wedged}")
    async with asyncio.timeout(30):
        while True:
            pid = await _main_pid(container)
            active = await container.run("systemctl is-active clockin-bridge", check=False)
            if pid not in (0, wedged) and active.stdout.strip() == "active":
                break
            await asyncio.sleep(0.2)
    journal = await container.run("journalctl -u clockin-bridge --no-pager -o cat")
    assert "Watchdog timeout" in journal.stdout, journal.stdout[-2000:]
    restarts = await container.run("systemctl show -p NRestarts --value clockin-bridge")
    assert int(restarts.stdout.strip()) >= 1
    await sandbox.publish_as(broker_port, "gate1", GATE_PASSWORD, "clockin/gate1/events", _swipe(2))
    await fake.wait_for_records(2, timeout=15)
