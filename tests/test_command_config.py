"""Each command loads only the config it needs: one that never talks to a vendor does not read
(or require) the credential files, so an operator's shell can inspect the daemon's database
where systemd's credentials are not there to read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

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
