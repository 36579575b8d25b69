"""Hostile or broken surroundings (issue 11, items 5 and 6), met as an operator meets them.

A machine the bridge cannot start on (the HTTP port taken, the state folder not writable, a TLS
key encrypted or damaged, a YAML error next to a secret) is one line naming the key, exit 2,
from `run` and from `check-config` alike, never a traceback or a passphrase prompt. Exports and
the database are private to the bridge's user, and a payroll CSV never carries a formula.
"""

from __future__ import annotations

import asyncio
import csv
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import ConfigError
from bridge.ops.web import serving
from bridge.reconcile.csv_export import safe_cell, write_csv
from tests.broker import free_port
from tests.test_cli import child_env, one_line, write_config

SECRET = "SeCrEt-4f0c9a"
COMMANDS = ["run", "check-config"]


def bridge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m bridge ARGS`, stdin closed: a prompt for a passphrase would find nothing."""
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=cwd,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def base_config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A config `run` starts with (against no broker: each test fails it before that)."""
    config: dict[str, Any] = {
        "mqtt": {"host": "127.0.0.1", "port": free_port()},
        "store": {"path": str(tmp_path / "state" / "queue.db")},
        "http": {"enabled": False},
        "log": {"format": "json"},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], *names: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "pass phrase" not in result.stderr.lower()
    line = one_line(result.stderr)
    assert line.startswith("clockin-bridge: config error: "), line
    for name in names:
        assert name in line, line
    return line


# --- http.listen in use --------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("command", COMMANDS)
def test_http_listen_in_use_is_one_line_and_exit_2(
    tmp_path: Path, taken_port: int, command: str
) -> None:
    listen = f"127.0.0.1:{taken_port}"
    config = write_config(tmp_path, base_config(tmp_path, http={"enabled": True, "listen": listen}))
    line = assert_one_line_exit_2(
        bridge(command, "--config", str(config), cwd=tmp_path), "http.listen", listen
    )
    assert "already in use" in line
    assert not (tmp_path / "state").exists(), "nothing is started on a taken port"


async def test_a_port_taken_after_the_check_still_names_http_listen(taken_port: int) -> None:
    with pytest.raises(ConfigError, match=rf"^http\.listen: 127\.0\.0\.1:{taken_port} .*in use"):
        async with serving(object(), host="127.0.0.1", port=taken_port):  # type: ignore[arg-type]
            pass


# --- the state folder ----------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("under", ["file/queue.db", "file/sub/queue.db"])
def test_an_unwritable_state_folder_is_one_line_and_exit_2(
    tmp_path: Path, command: str, under: str
) -> None:
    # A folder below a regular file cannot be created, not even by root (the tests' user).
    (tmp_path / "file").write_text("not a folder\n")
    config = write_config(tmp_path, base_config(tmp_path, store={"path": str(tmp_path / under)}))
    line = assert_one_line_exit_2(
        bridge(command, "--config", str(config), cwd=tmp_path), "store.path"
    )
    assert f"{tmp_path / 'file'} is not a folder" in line


# --- the TLS client key --------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed client certificate with its key plain, encrypted, damaged and foreign."""
    root = tmp_path_factory.mktemp("pki")
    for name in ("client", "other"):
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt",
            cwd=root,
        )  # fmt: skip
    openssl(
        "pkey", "-in", "client.key", "-aes256", "-passout", f"pass:{SECRET}",
        "-out", "encrypted.key",
        cwd=root,
    )  # fmt: skip
    (root / "damaged.key").write_text(
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5@@\n-----END PRIVATE KEY-----\n"
    )
    return root


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("key", "cert", "problem"),
    [
        ("encrypted.key", "client.crt", "is encrypted with a passphrase"),
        ("damaged.key", "client.crt", "is not a readable PEM file"),
        ("other.key", "client.crt", "is not the key of cert_file"),
    ],
)
def test_a_tls_key_that_cannot_be_loaded_is_one_line_and_exit_2(
    tmp_path: Path, pki: Path, command: str, key: str, cert: str, problem: str
) -> None:
    tls = {"cert_file": str(pki / cert), "key_file": str(pki / key), "insecure": True}
    config = write_config(tmp_path, base_config(tmp_path, mqtt={"tls": tls}))
    line = assert_one_line_exit_2(
        bridge(command, "--config", str(config), cwd=tmp_path), "mqtt.tls.key_file", key
    )
    assert problem in line


def test_a_damaged_certificate_is_named_as_the_certificate(tmp_path: Path, pki: Path) -> None:
    tls = {"cert_file": str(pki / "damaged.key"), "key_file": str(pki / "client.key")}
    config = write_config(tmp_path, base_config(tmp_path, mqtt={"tls": tls}))
    assert_one_line_exit_2(
        bridge("check-config", "--config", str(config), cwd=tmp_path), "mqtt.tls.cert_file"
    )


def test_check_config_accepts_a_plain_key(tmp_path: Path, pki: Path) -> None:
    tls = {"cert_file": str(pki / "client.crt"), "key_file": str(pki / "client.key")}
    config = write_config(tmp_path, base_config(tmp_path, mqtt={"tls": tls}))
    result = bridge("check-config", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "state").exists(), "a check creates nothing"


# --- YAML errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (f"*{SECRET}", "found undefined alias (line 3, column 14)"),  # read as an alias
        (f"!{SECRET}", "could not determine a constructor for the tag (line 3, column 14)"),
        (f"@{SECRET}", "found character '@' that cannot start any token (line 3, column 14)"),
    ],
)
def test_a_yaml_error_gives_file_line_column_and_kind_without_the_value(
    tmp_path: Path, command: str, value: str, kind: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"sinks:\n  go2clock:\n    api_key: {value}\n    enabled: true\n")
    line = assert_one_line_exit_2(
        bridge(command, "--config", str(config), cwd=tmp_path), str(config), kind
    )
    assert SECRET not in line
    assert SECRET[:6] not in line


# --- private files -------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_run_creates_the_database_and_its_wal_0600(tmp_path: Path) -> None:
    config = write_config(tmp_path, base_config(tmp_path))  # no broker: stays up, retrying
    db = tmp_path / "state" / "queue.db"
    files = [db, db.with_name("queue.db-wal"), db.with_name("queue.db-shm")]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "run", "--config", str(config),
        cwd=tmp_path, env=child_env(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not all(path.exists() for path in files):
            assert proc.returncode is None, "the bridge exited"
            assert time.monotonic() < deadline, f"not all of {files} within 10 s"
            await asyncio.sleep(0.05)
        assert {path.name: oct(mode(path)) for path in files} == {
            path.name: "0o600" for path in files
        }
        assert mode(db.parent) == 0o700
    finally:
        proc.kill()
        await proc.wait()


def test_the_cli_restores_the_callers_umask(tmp_path: Path) -> None:
    from bridge.cli import main

    before = os.umask(0o022)
    try:
        main(["check-config", "--config", str(tmp_path / "missing.yaml")])
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)


# --- CSV exports ---------------------------------------------------------------------------

HOSTILE = ['=HYPERLINK("http://x")', "@SUM(1)", "+1", "-1", "\tX", "\rX", "\n=1"]


def test_formula_like_text_is_neutralised_and_numbers_stay_numbers(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    before = os.umask(0o022)  # the export is private even for a caller with a lax umask
    try:
        write_csv(path, ["person", "count"], [[name, -5] for name in HOSTILE])
    finally:
        os.umask(before)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    assert [row[0] for row in rows] == ["'" + name for name in HOSTILE]
    assert {row[1] for row in rows} == {"-5"}  # a number the bridge computed is not text
    assert safe_cell("Ann =1") == "Ann =1"
    assert safe_cell("") == ""
    assert mode(path) == 0o600


async def test_reconcile_csv_neutralises_a_vendors_formula_user_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The names come from the vendor (punches added behind the bridge's back), the export
    from `reconcile --csv`; the file is created 0600 by the CLI."""
    from tests.test_reconcile import cli, go2clock_bridge, two_days

    # (the vendor answers a numeric-looking "+1" as the number 1: names it keeps as text)
    hostile = ['=HYPERLINK("http://x")', "@SUM(1)", "+SUM(1)", "-1", "-2+3"]
    async with go2clock_bridge(tmp_path, two_days()) as (fake, config, _):
        for userid in hostile:
            await fake._store(
                {"userid": userid, "checktime": "2026-11-02T12:00:00", "checktype": "2"}
            )
        export = tmp_path / "payroll.csv"
        code, _, err = await cli(
            capsys,
            "reconcile", "--config", str(config), "--sink", "go2clock",
            "--from", "2026-11-02", "--to", "2026-11-03", "--csv", str(export),
        )  # fmt: skip
    assert code == 1, err  # the added punches are findings
    with export.open(newline="", encoding="utf-8") as handle:
        people = {row["person"]: row for row in csv.DictReader(handle)}
    for userid in hostile:
        assert people["'" + userid]["extra"] == "1"
        assert userid not in people
    assert mode(export) == 0o600
