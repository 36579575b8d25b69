"""What can be checked of the container files on a machine without a Docker engine: the
Dockerfile's promises (slim base, non-root user, state volume, config path, health check on
/healthz, exec-form entrypoint), the compose example, and the example broker config."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_keeps_its_promises():
    steps = _instructions()
    first = dict(steps)
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", first["FROM"])
    users = [arg for op, arg in steps if op == "USER"]
    assert users
    assert users[-1] not in ("root", "0")
    assert json.loads(first["VOLUME"]) == ["/var/lib/clockin-bridge"]
    env = " ".join(arg for op, arg in steps if op == "ENV")
    assert "CLOCKIN_CONFIG=/etc/clockin-bridge/config.yaml" in env
    # The database follows from the config's folder (bridge/config/paths.py); secrets are
    # looked up where Docker puts them.
    assert "CLOCKIN_STORE__PATH" not in env
    assert "CREDENTIALS_DIRECTORY=/run/secrets" in env
    health = first["HEALTHCHECK"]
    assert "/healthz" in health
    assert json.loads(health.split("CMD", 1)[1].strip())[0] == "python"  # exec form
    assert json.loads(first["ENTRYPOINT"]) == ["clockin-bridge"]  # exec form
    assert json.loads(first["CMD"]) == ["run"]
    install = next(arg for op, arg in steps if op == "RUN" and "pip install" in arg)
    assert "-c constraints.txt" in install  # the pinned versions, as in `make`


def test_compose_runs_the_bridge_beside_a_keeping_broker():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:")
    bridge = services["clockin-bridge"]
    assert "mosquitto" in bridge["depends_on"]
    assert any(v.endswith(":/var/lib/clockin-bridge") for v in bridge["volumes"])
    assert any(":/etc/clockin-bridge/config.yaml" in v for v in bridge["volumes"])
    assert bridge["environment"]["CLOCKIN_MQTT__HOST"] == "mosquitto"
    # the API key comes from a secret file, not from the environment
    assert "API_KEY_FILE" in " ".join(bridge["environment"])
    conf = (ROOT / "deploy" / "mosquitto.conf").read_text().split("\n")
    for setting in ("persistence true", "max_queued_messages 0", "set_tcp_nodelay true"):
        assert setting in conf
