"""Each command loads only the config it needs: one that never talks to a vendor does not read
(or require) the credential files, so an operator's shell can inspect the daemon's database
where systemd's credentials are not there to read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from bridge.store import Store

MISSING = "no-such-credential-file"


def _config(tmp_path: Path) -> Path:
    config = {
        "store": {"path": str(tmp_path / "bridge.db")},
        "sinks": {"go2clock": {"enabled": True, "api_key_file": str(tmp_path / MISSING)}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
async def test_views_and_repairs_work_without_the_credentials(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "bridge.db", site_tz=ZoneInfo("UTC")):
        pass
    config = str(_config(tmp_path))
    for command in (["status"], ["dead", "list"], ["held", "list"], ["rejected", "list"]):
        result = _cli(*command, "--config", config, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stderr)
    # A command that talks to a vendor, and the check of the whole config, still need them.
    for command in (
        ["check-config"],
        ["reconcile", "--sink", "go2clock", "--from", "2026-11-23", "--to", "2026-11-23"],
    ):
        result = _cli(*command, "--config", config, cwd=tmp_path)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "api_key_file" in result.stderr
        assert MISSING in result.stderr


def _run_with_env(
    tmp_path: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )


def test_a_misspelt_section_in_the_environment_is_an_error(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    result = _run_with_env(
        tmp_path, {"CLOCKIN_SINKZ__GO2CLOCK__API_KEY": "k"}, "check-config", "--config", config
    )
    assert result.returncode == 2
    assert "CLOCKIN_SINKZ__GO2CLOCK__API_KEY" in result.stderr
    assert "no config section 'sinkz'" in result.stderr


def test_a_bad_value_from_the_environment_says_so(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    result = _run_with_env(tmp_path, {"CLOCKIN_MQTT__PORT": "eighty"}, "status", "--config", config)
    assert result.returncode == 2
    assert "mqtt.port (from the environment variable CLOCKIN_MQTT__PORT)" in result.stderr


def test_missing_checktypes_are_named_plainly(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    go2clock = {"api_key": "k", "checktypes": {"in": 0, "out": 1}}
    path.write_text(yaml.safe_dump({"sinks": {"go2clock": go2clock}}))
    result = _cli("check-config", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "checktypes lacks break_end, break_start" in result.stderr
    assert "Action." not in result.stderr


async def test_reconcile_of_a_vendor_without_credentials_is_a_config_error(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "bridge.db", site_tz=ZoneInfo("UTC")):
        pass
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "bridge.db")}}))
    for sink in ("mctime", "timetrack", "q2"):
        result = _cli(
            "reconcile",
            "--sink",
            sink,
            "--from",
            "2026-11-23",
            "--to",
            "2026-11-23",
            "--config",
            str(path),
            cwd=tmp_path,
        )
        assert result.returncode == 2, (sink, result.stderr)
        assert result.stderr.startswith("clockin-bridge: config error: reconcile --sink")
