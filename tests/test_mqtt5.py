"""MQTT 5 for one bridge or several (issue 16, item 4): clean_start false with an explicit
session expiry, a client id per machine (`{hostname}`), and a shared subscription
(`$share/<group>/<filter>`) splitting the terminals' messages between bridges, each message to
exactly one. Through a real mosquitto."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bridge.config import ConfigError, load_settings
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import API_KEY, canonical, publish, running_bridge, settings_from, write_config

TOPIC = "clockin/door-1/events"


def _mqtt5(client_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "mqtt": {"client_id": client_id, "protocol": "5", "session_expiry_seconds": 600, **extra}
    }


def _events_in(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database)) as db:
        return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def test_protocol_5_needs_an_explicit_session_expiry(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("mqtt:\n  protocol: '5'\n")
    with pytest.raises(ConfigError, match="session_expiry_seconds"):
        load_settings(config)


def test_the_client_id_may_name_the_machine(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "mqtt:\n  protocol: '5'\n  session_expiry_seconds: 60\n"
        "  client_id: 'clockin-bridge-{hostname}'\n"
    )
    assert load_settings(config).mqtt.client_id == f"clockin-bridge-{socket.gethostname()}"


def test_mqtt_311_refuses_a_client_id_its_brokers_may_refuse(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("mqtt:\n  client_id: 'a-client-id-of-thirty-characters'\n")
    with pytest.raises(ConfigError, match="longer than 23"):
        load_settings(config)


async def test_an_mqtt5_session_keeps_what_arrives_while_the_bridge_is_away(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Without the session expiry an MQTT 5 session ends at the disconnect, and the 20 events
    published meanwhile would never reach the bridge."""
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        config = write_config(
            tmp_path, broker_port=broker.port, go2clock_url=url, extra=_mqtt5("bridge-v5")
        )
        async with running_bridge(settings_from(config)):
            await publish(broker.port, [(TOPIC, canonical(0))])
            await fake.wait_for_records(1, timeout=10)
        await publish(broker.port, [(TOPIC, canonical(n)) for n in range(1, 21)])
        async with running_bridge(settings_from(config)):
            await fake.wait_for_records(21, timeout=15)
    assert len(fake.punches_by_key()) == 21


async def test_a_shared_subscription_gives_each_message_to_one_bridge(
    broker: Mosquitto, tmp_path: Path
) -> None:
    fake = FakeGo2Clock(api_key=API_KEY)
    shared = [{"topic": "$share/bridges/clockin/+/events"}]
    async with running_fake_go2clock(fake) as url:
        configs = []
        for name in ("a", "b"):
            home = tmp_path / name
            home.mkdir()
            extra = _mqtt5(f"bridge-{name}", subscriptions=shared)
            configs.append(
                write_config(home, broker_port=broker.port, go2clock_url=url, extra=extra)
            )
        async with (
            running_bridge(settings_from(configs[0])),
            running_bridge(settings_from(configs[1])),
        ):
            await publish(broker.port, [(TOPIC, canonical(n)) for n in range(100)])
            await fake.wait_for_records(100, timeout=20)
    assert len(fake.punches_by_key()) == 100
    assert max(fake.punches_by_key().values()) == 1
    stored = [_events_in(tmp_path / name / "bridge.db") for name in ("a", "b")]
    assert sum(stored) == 100
    assert min(stored) > 0  # both took a share
