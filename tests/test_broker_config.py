"""The broker config a site ships (deploy/mosquitto.conf and deploy/mosquitto.acl), run by a real
mosquitto: only known users get in, each terminal only on its own topics, no oversized messages,
and the bridge itself works through that ACL.

The shipped file is changed only where a test must: its own port on 127.0.0.1, its own
persistence folder, a password file made here; the ACL file is used as shipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from bridge.events import MAX_PAYLOAD_BYTES
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import API_KEY, canonical, running_bridge, settings_from, write_config

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "deploy" / "mosquitto.conf"
ACL = ROOT / "deploy" / "mosquitto.acl"
USER_SCRIPT = ROOT / "deploy" / "mqtt-user.sh"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"

BRIDGE = "clockin-bridge"
PASSWORDS = {BRIDGE: "bridge-pw-5d1e", "gate1": "gate1-pw-9c2a", "gate2": "gate2-pw-77b0"}
NOT_AUTHORIZED = 0x87
WAIT = 5.0  # seconds for anything the broker should do at once


def shipped_options() -> dict[str, str]:
    """The shipped config's options (the last one wins, as in mosquitto)."""
    options = {}
    for line in CONF.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            options[key] = value.strip()
    return options


MESSAGE_SIZE_LIMIT = int(shipped_options()["message_size_limit"])


def write_password_file(path: Path, passwords: dict[str, str]) -> None:
    for n, (user, password) in enumerate(passwords.items()):
        create = ["-c"] if n == 0 else []
        subprocess.run(
            [MOSQUITTO_PASSWD, *create, "-b", str(path), user, password],
            check=True,
            capture_output=True,
            timeout=10,
        )


def shipped_broker(workdir: Path, password_file: Path) -> Mosquitto:
    """A Mosquitto running the shipped config, rewritten only where a test must."""
    broker = Mosquitto(workdir)  # picks a free port; its own config is replaced below
    replace = {
        "listener": f"{broker.port} 127.0.0.1",
        "persistence_location": f"{workdir}/",
        "password_file": str(password_file),
        "acl_file": str(ACL),
    }
    lines = []
    for shipped in CONF.read_text().splitlines():
        key = shipped.strip().partition(" ")[0]
        lines.append(f"{key} {replace.pop(key)}" if key in replace else shipped)
    assert not replace, f"the shipped config lost {sorted(replace)}"
    lines += [
        # Started as root (CI), mosquitto would switch to its own user and then could not read
        # the password file or write its persistence file in our temporary folder.
        "user root",
        f"log_dest file {workdir}/mosquitto.log",
        "log_type all",
    ]
    broker.config.write_text("\n".join(lines) + "\n")
    return broker


@pytest.fixture
def shipped(tmp_path: Path) -> Iterator[Mosquitto]:
    """The shipped config on a free port, users from PASSWORDS."""
    password_file = tmp_path / "passwd"
    write_password_file(password_file, PASSWORDS)
    mosquitto = shipped_broker(tmp_path / "broker", password_file)
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


class RefusedError(Exception):
    def __init__(self, reason: ReasonCode) -> None:
        super().__init__(str(reason))
        self.reason = reason


class Client:
    """A paho MQTT 5 client on its own network thread that records what the broker answers:
    the reason code of CONNACK, each PUBACK and SUBACK, and the messages it receives.

    With `max_queued_messages 0`, mosquitto 2.0.16-2.0.21 (and Debian 12's patched 2.0.11)
    close the connection right after refusing a publish (mosquitto#3244, fixed in 2.0.22); paho
    reconnects by itself, as a terminal would, so a test goes on, but the reconnected client has
    a new session: subscribe before, never after, a refused publish."""

    def __init__(
        self,
        port: int,
        user: str | None,
        password: str | None = None,
        *,
        protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5,
    ) -> None:
        self.port = port
        self.paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol)
        if user is not None:
            self.paho.username_pw_set(user, password)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.disconnected = threading.Event()
        self._connack: queue.Queue[ReasonCode] = queue.Queue()
        self._acks: dict[int, Any] = {}
        self._acked = threading.Condition()
        self.paho.on_connect = self._on_connect
        self.paho.on_publish = self._on_ack
        self.paho.on_subscribe = self._on_ack
        self.paho.on_message = lambda _client, _userdata, message: self.messages.put(message)
        self.paho.on_disconnect = lambda *_: self.disconnected.set()

    def _on_connect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _p: Any) -> None:
        self._connack.put(reason)

    def _on_ack(self, _client: Any, _userdata: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._acked:
            self._acks[mid] = reason
            self._acked.notify_all()

    def __enter__(self) -> Self:
        self.paho.connect("127.0.0.1", self.port, keepalive=10)
        self.paho.loop_start()
        reason = self._connack.get(timeout=WAIT)
        if reason.is_failure:
            self.__exit__()
            raise RefusedError(reason)
        return self

    def __exit__(self, *_: object) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()

    def _ack(self, mid: int) -> Any:
        with self._acked:
            assert self._acked.wait_for(lambda: mid in self._acks, timeout=WAIT), "no answer"
            return self._acks.pop(mid)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
        """Publish with QoS 1; the PUBACK's reason code."""
        reason: ReasonCode = self._ack(self.paho.publish(topic, payload, qos=1, retain=retain).mid)
        return reason

    def subscribe(self, topic: str) -> ReasonCode:
        """Subscribe with QoS 1; the SUBACK's reason code."""
        _, mid = self.paho.subscribe(topic, qos=1)
        assert mid is not None
        reasons: list[ReasonCode] = self._ack(mid)
        return reasons[0]

    def receive(self, timeout: float = WAIT) -> mqtt.MQTTMessage | None:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def received_topics(self) -> list[str]:
        topics = []
        while not self.messages.empty():
            topics.append(self.messages.get().topic)
        return topics


def connect(
    shipped: Mosquitto,
    user: str | None,
    password: str | None = None,
    *,
    protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5,
) -> Client:
    if user is not None and password is None:
        password = PASSWORDS[user]
    return Client(shipped.port, user, password, protocol=protocol)


# --- what the shipped files say ------------------------------------------------------------


def test_shipped_config_closes_the_broker_and_keeps_the_bridge_queue():
    options = shipped_options()
    assert options["allow_anonymous"] == "false"
    assert options["password_file"]
    assert options["acl_file"] == "/mosquitto/config/mosquitto.acl"
    assert options["max_queued_messages"] == "0"
    assert options["persistence"] == "true"
    # Payloads the bridge reads must get through; oversized ones still reach it a little way.
    assert MESSAGE_SIZE_LIMIT > MAX_PAYLOAD_BYTES
    assert int(options["max_packet_size"]) > MESSAGE_SIZE_LIMIT + 1024


def test_compose_mounts_the_shipped_files_and_gives_the_bridge_its_password_from_a_secret():
    compose = (ROOT / "compose.yaml").read_text()
    for mount in (
        "./deploy/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro",
        "./deploy/mosquitto.acl:/mosquitto/config/mosquitto.acl:ro",
        f"./deploy/mosquitto.passwd:{shipped_options()['password_file']}:ro",
    ):
        assert mount in compose
    assert "CLOCKIN_MQTT__USERNAME: clockin-bridge" in compose
    assert "CLOCKIN_MQTT__PASSWORD_FILE: /run/secrets/mqtt_password" in compose
    assert "CLOCKIN_MQTT__PASSWORD:" not in compose


# --- who gets in ---------------------------------------------------------------------------


def test_anonymous_and_wrong_password_are_refused(shipped: Mosquitto):
    with pytest.raises(RefusedError) as anonymous:
        connect(shipped, None).__enter__()
    assert anonymous.value.reason.value == NOT_AUTHORIZED
    with pytest.raises(RefusedError) as wrong:
        connect(shipped, "gate1", "not-the-password").__enter__()
    assert wrong.value.reason.is_failure
    with pytest.raises(RefusedError):
        connect(shipped, "gate9", "nobody").__enter__()
    with connect(shipped, "gate1"):
        pass


# --- each terminal on its own topics -------------------------------------------------------


def test_a_terminal_publishes_its_own_events_only(shipped: Mosquitto):
    with connect(shipped, BRIDGE) as bridge, connect(shipped, "gate1") as gate1:
        assert not bridge.subscribe("clockin/+/events").is_failure
        assert not gate1.publish("clockin/gate1/events", b"own").is_failure

        message = bridge.receive()
        assert message is not None
        assert (message.topic, message.payload) == ("clockin/gate1/events", b"own")

        # As another terminal, or where only the bridge may write: dropped, and MQTT 5 says so.
        for topic in ("clockin/gate2/events", "clockin/gate1/ack", "clockin/bridge/status"):
            assert gate1.publish(topic, b"forged").value == NOT_AUTHORIZED, topic
        # One client's messages are handled in order: once this one arrives, a forged one
        # delivered would be here too.
        assert not gate1.publish("clockin/gate1/events", b"marker").is_failure
        message = bridge.receive()
        assert message is not None
        assert message.payload == b"marker"
        assert bridge.received_topics() == []


def test_a_terminal_reads_its_own_acks_only(shipped: Mosquitto):
    with (
        connect(shipped, BRIDGE) as bridge,
        connect(shipped, "gate1") as gate1,
        connect(shipped, "gate2") as gate2,
    ):
        assert not gate1.subscribe("clockin/gate1/ack").is_failure
        # mosquitto 2.0.11 grants these subscriptions and checks each message at delivery: a
        # wildcard reads nothing beyond the ACL either (nobody else's acks, nobody's events).
        gate1.subscribe("clockin/gate2/ack")
        gate1.subscribe("clockin/#")
        assert not gate2.subscribe("clockin/gate2/ack").is_failure

        assert not bridge.publish("clockin/gate2/ack", b'{"person": "Ana"}').is_failure
        assert not gate2.publish("clockin/gate2/events", b"swipe").is_failure
        message = gate2.receive()
        assert message is not None
        assert message.topic == "clockin/gate2/ack"

        assert not bridge.publish("clockin/gate1/ack", b'{"person": "Bo"}').is_failure
        message = gate1.receive()
        assert message is not None
        assert (message.topic, message.payload) == ("clockin/gate1/ack", b'{"person": "Bo"}')
        # Only its own ack (once per matching subscription), not gate2's ack, nor its event.
        assert set(gate1.received_topics()) <= {"clockin/gate1/ack"}


def test_every_user_reads_the_bridge_status_and_only_the_bridge_writes_it(shipped: Mosquitto):
    with connect(shipped, BRIDGE) as bridge:
        assert not bridge.publish("clockin/bridge/status", b"online", retain=True).is_failure
    with connect(shipped, "gate1") as gate1:
        assert not gate1.subscribe("clockin/bridge/status").is_failure
        message = gate1.receive()
        assert message is not None
        assert message.payload == b"online"


# --- size limits ---------------------------------------------------------------------------


def test_a_payload_over_the_size_limit_is_dropped(shipped: Mosquitto):
    # MQTT 3.1.1, as most badge terminals speak: mosquitto 2.0.x answers an MQTT 5 client with
    # reason 0x95, which is not a PUBACK reason code, and paho then drops the connection and
    # sends the message again on every reconnect (see deploy/mosquitto.conf).
    with (
        connect(shipped, BRIDGE) as bridge,
        connect(shipped, "gate1", protocol=mqtt.MQTTv311) as gate1,
    ):
        bridge.subscribe("clockin/+/events")
        gate1.publish("clockin/gate1/events", b"x" * MESSAGE_SIZE_LIMIT)
        message = bridge.receive()
        assert message is not None
        assert len(message.payload) == MESSAGE_SIZE_LIMIT

        gate1.publish("clockin/gate1/events", b"x" * (MESSAGE_SIZE_LIMIT + 1))
        gate1.publish("clockin/gate1/events", b"marker")
        message = bridge.receive()
        assert message is not None
        assert message.payload == b"marker"
        assert bridge.received_topics() == []


def test_a_packet_over_max_packet_size_disconnects_the_client(shipped: Mosquitto):
    limit = int(shipped_options()["max_packet_size"])
    # MQTT 3.1.1: the client is not told the limit, so it sends the packet and the broker decides.
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.username_pw_set("gate1", PASSWORDS["gate1"])
    disconnected = threading.Event()
    client.on_disconnect = lambda *_: disconnected.set()
    client.connect("127.0.0.1", shipped.port, keepalive=10)
    client.loop_start()
    try:
        client.publish("clockin/gate1/events", b"x" * limit, qos=1)
        assert disconnected.wait(WAIT)
    finally:
        client.disconnect()
        client.loop_stop()


# --- the real bridge through the shipped ACL -----------------------------------------------


async def test_the_bridge_works_through_the_shipped_acl(shipped: Mosquitto, tmp_path: Path):
    """The bridge's own subscriptions, acks, status and last will with its user and password,
    and a terminal's forged event on another terminal's topic never stored."""
    secret = tmp_path / "mqtt_password"
    secret.write_text(PASSWORDS[BRIDGE] + "\n")
    fake = FakeGo2Clock(api_key=API_KEY)
    mqtt_extra = {"username": BRIDGE, "password_file": str(secret)}
    async with running_fake_go2clock(fake) as url:
        config = write_config(
            tmp_path, broker_port=shipped.port, go2clock_url=url, extra={"mqtt": mqtt_extra}
        )
        settings = settings_from(config)
        async with running_bridge(settings):
            await asyncio.to_thread(_terminal_session, shipped)
            records = await fake.wait_for_records(2, timeout=10)
    assert [r["deviceserial"] for r in records] == ["gate1", "gate1"]
    with sqlite3.connect(settings.store.path) as db:
        keys = [key for (key,) in db.execute("SELECT key FROM events ORDER BY id")]
    assert keys == ["gate1/evt-000001", "gate1/evt-000003"]


def _terminal_session(shipped: Mosquitto) -> None:
    """gate1 as a kiosk: the bridge's status, two swipes and their acks; and a second
    connection of gate1 forging a swipe of gate2 (refused, possibly disconnected)."""
    with connect(shipped, "gate1") as gate1:
        assert not gate1.subscribe("clockin/bridge/status").is_failure
        status = gate1.receive()
        assert status is not None
        assert status.payload == b"online"
        assert not gate1.subscribe("clockin/gate1/ack").is_failure

        assert not gate1.publish("clockin/gate1/events", canonical(1)).is_failure
        with connect(shipped, "gate1") as forger:
            assert forger.publish("clockin/gate2/events", canonical(2)).value == NOT_AUTHORIZED
        assert not gate1.publish("clockin/gate1/events", canonical(3)).is_failure
        acks = [gate1.receive(10), gate1.receive(10)]
    assert [json.loads(a.payload)["id"] for a in acks if a] == ["evt-000001", "evt-000003"]


# --- the documented way to make users --------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="a POSIX shell script")
def test_mqtt_user_script_makes_users_the_shipped_broker_accepts(tmp_path: Path):
    env = {
        **os.environ,
        "MQTT_PASSWD_FILE": str(tmp_path / "passwd"),
        "MQTT_SECRET_FILE": str(tmp_path / "secrets" / "mqtt_password"),
        "MQTT_PASSWD_OWNER": "",
    }
    outputs = {}
    for user in (BRIDGE, "gate1"):
        done = subprocess.run(
            [str(USER_SCRIPT), user],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs[user] = done.stdout.strip()
    bridge_password = (tmp_path / "secrets" / "mqtt_password").read_text().strip()
    gate1_password = outputs["gate1"].removeprefix("gate1: ")
    assert len(bridge_password) == len(gate1_password) == 24
    assert bridge_password not in outputs[BRIDGE]
    assert (tmp_path / "passwd").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700

    mosquitto = shipped_broker(tmp_path / "broker", tmp_path / "passwd")
    mosquitto.start()
    try:
        with Client(mosquitto.port, BRIDGE, bridge_password):
            pass
        with Client(mosquitto.port, "gate1", gate1_password):
            pass
    finally:
        mosquitto.stop()
    for bad in ("gate/1", "gate+", ""):
        done = subprocess.run(
            [str(USER_SCRIPT), bad],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert done.returncode == 2, bad
