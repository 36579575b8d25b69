"""What terminals and dashboards hear back over MQTT: per-swipe feedback and availability."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import types
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiomqtt
import paho.mqtt.client as mqtt

from bridge.config import MqttConfig
from bridge.events import PayloadError, PayloadFormat
from bridge.ingest.client import connected, raise_lost_cancellation
from bridge.ingest.feedback import WINDOW, Feedback
from bridge.routing import parse_event, payload_id
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.faults.common import start_bridge
from tests.harness import (
    API_KEY,
    event_time,
    publish,
    running_bridge,
    settings_from,
    wait_until,
    write_config,
)

TOPIC = "clockin/kiosk1/events"


async def _collect(port: int, topic: str, into: list[tuple[str, bytes]], ready: asyncio.Event):
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=1)
        ready.set()
        async for message in client.messages:
            # appended one at a time: the test reads the list while it grows
            into.append((message.topic.value, bytes(message.payload)))  # noqa: PERF401


async def test_each_swipe_gets_feedback_and_deliveries_too(broker: Mosquitto, tmp_path: Path):
    (tmp_path / "directory.csv").write_text("badge,userid,name\n04A1,1,Ana\n04B2,2,Ben\n")
    fake = FakeGo2Clock(api_key=API_KEY)
    heard: list[tuple[str, bytes]] = []
    ready = asyncio.Event()
    listener = asyncio.create_task(_collect(broker.port, "clockin/+/ack", heard, ready))
    await ready.wait()
    when = event_time(0).isoformat()
    swipes = [
        {"id": "s1", "badge": "04A1", "action": "in", "time": when},
        {"id": "s2", "badge": "04A1", "action": "in", "time": when},  # double swipe
        {"id": "s3", "badge": "0FFF", "action": "in", "time": when},  # unknown badge
    ]
    try:
        async with running_fake_go2clock(fake) as url:
            config = write_config(
                tmp_path,
                broker_port=broker.port,
                go2clock_url=url,
                extra={"mqtt": {"ack_delivery": True}},
            )
            async with running_bridge(settings_from(config)):
                messages = [(TOPIC, json.dumps(s).encode()) for s in swipes]
                await publish(broker.port, [*messages, (TOPIC, b"\xff not json")])
                await wait_until(_count_at_least(heard, 5), timeout=10, what="5 feedback messages")
    finally:
        listener.cancel()
    assert all(topic == "clockin/kiosk1/ack" for topic, _ in heard)
    replies = [json.loads(payload) for _, payload in heard]
    by_status = {(r.get("id"), r["status"]): r for r in replies}
    accepted = by_status[("s1", "accepted")]
    assert (accepted["person"], accepted["action"]) == ("Ana", "in")
    assert by_status[("s2", "duplicate")]["reason"] == "double swipe"
    assert by_status[("s3", "unmapped")]["person"] is None
    assert "not UTF-8" in by_status[(None, "rejected")]["reason"]
    assert by_status[("s1", "delivered")]["sink"] == "go2clock"


def _count_at_least(items: list, count: int):
    async def predicate() -> bool:
        return len(items) >= count

    return predicate


async def _retained_status(port: int) -> bytes:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe("clockin/bridge/status", qos=1)
        async with asyncio.timeout(5):
            async for message in client.messages:
                return bytes(message.payload)
    raise AssertionError("no retained status")


async def test_availability_is_retained_with_a_last_will(broker: Mosquitto, tmp_path: Path):
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        config = write_config(tmp_path, broker_port=broker.port, go2clock_url=url)
        async with running_bridge(settings_from(config)):
            assert await _retained_status(broker.port) == b"online"
        assert await _retained_status(broker.port) == b"offline"  # said on a clean stop

        # Killed outright, the bridge cannot say it: the broker's last will does.
        process = await start_bridge(config, None)
        try:
            await wait_until(_status_is(broker.port, b"online"), timeout=20, what="online")
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        await wait_until(_status_is(broker.port, b"offline"), timeout=10, what="last will")


def _status_is(port: int, expected: bytes):
    async def predicate() -> bool:
        return await _retained_status(port) == expected

    return predicate


async def test_a_cancellation_lost_inside_aiomqtt_is_raised_again() -> None:
    """Python 3.11's asyncio.wait_for, inside aiomqtt's calls, can swallow a cancellation that
    arrives with the reply (CPython gh-86296); the ingest loop must still stop (once it
    went on consuming and held up the bridge's stop for good)."""
    carried_on = asyncio.Event()

    async def awaits_a_reply_that_swallows_the_cancel() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # what wait_for does then
            await asyncio.sleep(0.05)
        raise_lost_cancellation()
        carried_on.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(awaits_a_reply_that_swallows_the_cancel())
    await asyncio.sleep(0.01)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done
    assert task.cancelled()
    assert not carried_on.is_set()


class _PahoMessageInfo:
    def __init__(self) -> None:
        self.rc = mqtt.MQTT_ERR_SUCCESS
        self.acknowledged = False

    def is_published(self) -> bool:
        return self.acknowledged


class _PahoClient:
    """Stands in for the paho client inside aiomqtt's: records what it is handed."""

    def __init__(self) -> None:
        self.handed: list[_PahoMessageInfo] = []

    def publish(self, topic: str, payload: bytes, qos: int) -> _PahoMessageInfo:
        info = _PahoMessageInfo()
        self.handed.append(info)
        return info


async def test_feedback_waits_when_the_broker_has_not_acknowledged_a_window_of_replies() -> None:
    feedback = Feedback(ack_topic="clockin/{terminal}/ack")
    client = types.SimpleNamespace(_client=_PahoClient())
    for n in range(WINDOW + 50):
        feedback.send("gate1", {"n": n})
    task = asyncio.create_task(feedback.publish_forever(client))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0.1)
        assert len(client._client.handed) == WINDOW, "paho must not be handed more"
        for info in client._client.handed[:10]:
            info.acknowledged = True
        await asyncio.sleep(0.1)
        assert len(client._client.handed) == WINDOW + 10
    finally:
        task.cancel()


async def test_the_broker_connection_sends_small_packets_at_once(broker: Mosquitto) -> None:
    """TCP_NODELAY (aiomqtt's public socket_options): a reply must not wait about 40 ms behind
    Nagle's algorithm for the broker's delayed TCP ack of the PUBACK before it."""
    async with connected(MqttConfig(port=broker.port, client_id="nodelay")) as client:
        sock = client._client.socket()
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


# (the payload's id, what the rejected swipe's feedback says its id is)
REJECTED_IDS = {
    "a string": ("r-1", "r-1"),
    "an integer": (42, "42"),
    "padded": ("  r-2 ", "r-2"),
    "128 characters": ("x" * 128, "x" * 128),
    "129 characters": ("y" * 129, None),
    "a control character": ("r\x1b3", None),
    "empty": ("", None),
    "a boolean": (True, None),
    "a list": (["r-4"], None),
    "null": (None, None),
}


async def test_rejected_feedback_names_the_payloads_id(broker: Mosquitto, tmp_path: Path):
    """A kiosk must tell which swipe was refused: the id a rejected payload carries, when it
    is one the canonical format would take; else null, as for a payload that is no object."""
    fake = FakeGo2Clock(api_key=API_KEY)
    heard: list[tuple[str, bytes]] = []
    ready = asyncio.Event()
    listener = asyncio.create_task(_collect(broker.port, "clockin/+/ack", heard, ready))
    await ready.wait()
    # Each one rejected for its action, whatever its id.
    rejected = [
        json.dumps({"id": sent, "badge": "04A1", "action": "sideways"}).encode()
        for sent, _ in REJECTED_IDS.values()
    ]
    others = [b'["id", "r-5"]', b'{"id": "r-6", "badge": ', b"\xff not json"]
    try:
        async with running_fake_go2clock(fake) as url:
            config = write_config(tmp_path, broker_port=broker.port, go2clock_url=url)
            async with running_bridge(settings_from(config)):
                await publish(broker.port, [(TOPIC, p) for p in [*rejected, *others]])
                count = len(rejected) + len(others)
                await wait_until(_count_at_least(heard, count), timeout=10, what="feedback")
    finally:
        listener.cancel()
    replies = [json.loads(payload) for _, payload in heard]
    assert {r["status"] for r in replies} == {"rejected"}
    expected = [want for _, want in REJECTED_IDS.values()] + [None, None, None]
    assert [r["id"] for r in replies] == expected
    assert "action" in replies[0]["reason"]


def test_a_rejected_payloads_id_follows_the_canonical_formats_rule() -> None:
    """payload_id takes exactly the ids the canonical parser takes, as it keeps them."""
    ids: list[object] = [
        *(sent for sent, _ in REJECTED_IDS.values()),
        *(0, -7, 10**40, 10**200, 1.5, {"a": 1}, "ü-é", "a b", "a\u202eb", "\u00a0", "tab\t"),
    ]
    for value in ids:
        payload = json.dumps({"id": value, "badge": "04A1", "action": "in"}).encode()
        try:
            event = parse_event(
                "clockin/k/events",
                payload,
                PayloadFormat.CANONICAL,
                pattern="clockin/+/events",
                site_tz=ZoneInfo("Europe/Berlin"),
                received_at=datetime.now(UTC),
            )
        except PayloadError:
            parsed = None
        else:
            assert event is not None
            parsed = event.source_id
        assert payload_id(payload) == parsed, value
