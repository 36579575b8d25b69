"""TLS to the broker with a client certificate, plus username and password, against a real
mosquitto TLS listener with certificates this test generates."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.config import ConfigError, load_settings
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import (
    API_KEY,
    SHIPPED_COMMIT_WAIT,
    canonical,
    running_bridge,
    settings_from,
    write_config,
)

PASSWORD = "mqtt-pass-4c1e"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(root: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=root,
    )
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "")):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=root,
        )
        ext = root / f"{name}.ext"
        ext.write_text(extra + "\n" if extra else "basicConstraints=CA:FALSE\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.crt",
            "-extfile",
            ext.name,
            cwd=root,
        )


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    pki = tmp_path / "pki"
    pki.mkdir()
    _make_pki(pki)
    passwords = pki / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "bridge", PASSWORD],
        check=True,
        capture_output=True,
    )
    broker = Mosquitto(
        tmp_path / "broker",
        listener_extra=(
            f"cafile {pki}/ca.crt\ncertfile {pki}/server.crt\nkeyfile {pki}/server.key\n"
            f"require_certificate true\npassword_file {passwords}\n"
        ),
    )
    broker.start()
    yield broker, pki
    broker.stop()


# With the shipped commit wait, each batch is acknowledged by its own task once its
# transaction is committed, over the same TLS connection the messages keep arriving on.
@pytest.mark.parametrize("commit_wait", [0, SHIPPED_COMMIT_WAIT])
async def test_events_flow_over_tls_with_client_certificate_and_password(
    tls_broker: tuple[Mosquitto, Path], tmp_path: Path, commit_wait: float
):
    broker, pki = tls_broker
    (tmp_path / "mqtt-password").write_text(PASSWORD + "\n")
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        config = write_config(
            tmp_path,
            broker_port=broker.port,
            go2clock_url=url,
            extra={
                "store": {"commit_wait_seconds": commit_wait},
                "mqtt": {
                    "username": "bridge",
                    "password_file": str(tmp_path / "mqtt-password"),
                    "tls": {
                        "ca_file": str(pki / "ca.crt"),
                        "cert_file": str(pki / "client.crt"),
                        "key_file": str(pki / "client.key"),
                    },
                },
            },
        )
        async with running_bridge(settings_from(config)) as bridge:
            assert bridge.ingest is not None
            await _publish_tls(broker.port, pki)
            records = await fake.wait_for_records(3, timeout=15)
    assert len(records) == 3


async def _publish_tls(port: int, pki: Path) -> None:
    import ssl

    import aiomqtt

    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    async with aiomqtt.Client(
        "127.0.0.1", port, username="bridge", password=PASSWORD, tls_context=context
    ) as client:
        for n in range(3):
            await client.publish("clockin/secure/events", canonical(n), qos=1)


def test_tls_files_must_exist(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("mqtt:\n  tls:\n    ca_file: /nowhere/ca.crt\n")
    with pytest.raises(ConfigError, match=r"mqtt\.tls.*ca_file: no such file"):
        load_settings(config)
