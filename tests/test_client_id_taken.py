"""Another client with the bridge's client id: the bridge says so once, naming the id, and
backs off for minutes instead of knocking the other off the broker every second; once the other
client is gone it comes back and delivers.

mosquitto 2.0.11 closes the older connection without a word, for MQTT 3.1.1 and MQTT 5 alike
(`test_mosquitto_closes_a_taken_over_connection_without_a_disconnect_packet` keeps that fact
measured), so the bridge infers a taken id from the connections the broker keeps closing
(bridge.ingest.takeover).
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from structlog.testing import capture_logs

from bridge.ingest import takeover
from bridge.ingest.takeover import HINT, Taken, TakeoverWatch
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import (
    API_KEY,
    canonical,
    publish,
    running_bridge,
    settings_from,
    wait_until,
    write_config,
)

CLIENT_ID = "bridge-under-test"  # tests.harness.write_config's
TOPIC = "clockin/gate1/events"


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _drop_after(watch: TakeoverWatch, clock: _Clock, seconds: float) -> Taken | None:
    watch.accepted()
    clock.now += seconds
    return watch.lost()


def test_five_short_lived_connections_in_a_row_mean_the_id_is_taken() -> None:
    clock = _Clock()
    watch = TakeoverWatch(clock=clock)
    assert [_drop_after(watch, clock, 1.0) for _ in range(4)] == [None] * 4
    assert _drop_after(watch, clock, 1.0) == Taken(backoff=60.0, first=True, drops=5)
    # Still taken: waits double up to the cap, and only the first is the one to log.
    waits = [_drop_after(watch, clock, 1.0) for _ in range(4)]
    assert waits == [
        Taken(backoff=120.0, first=False, drops=6),
        Taken(backoff=240.0, first=False, drops=7),
        Taken(backoff=300.0, first=False, drops=8),
        Taken(backoff=300.0, first=False, drops=9),
    ]
    assert watch.settled()  # a connection lived: the spell is over, say so once
    assert not watch.settled()
    assert [_drop_after(watch, clock, 1.0) for _ in range(4)] == [None] * 4
    assert _drop_after(watch, clock, 1.0) == Taken(backoff=60.0, first=True, drops=5)


@pytest.mark.parametrize(
    "interruption",
    ["broker unreachable", "connection lived", "dropped by us"],
)
def test_anything_but_a_quick_drop_by_the_broker_ends_the_streak(interruption: str) -> None:
    """A restarting broker refuses connections for a while; a broker killed three times
    (tests/faults/test_kill_broker) is no takeover."""
    clock = _Clock()
    watch = TakeoverWatch(clock=clock)
    for _ in range(4):
        assert _drop_after(watch, clock, 1.0) is None
    if interruption == "broker unreachable":
        assert watch.lost() is None  # a connection attempt the broker did not accept
    elif interruption == "connection lived":
        assert _drop_after(watch, clock, takeover.SHORT_LIVED_SECONDS) is None
    else:
        watch.accepted()
        watch.dropped_by_us()
    for _ in range(4):
        assert _drop_after(watch, clock, 1.0) is None
    assert _drop_after(watch, clock, 1.0) is not None


def _connect_packet(client_id: bytes, *, mqtt5: bool) -> bytes:
    flags, keepalive = b"\x00", b"\x00\x3c"  # clean session / clean start off
    variable = b"\x00\x04MQTT" + (b"\x05" if mqtt5 else b"\x04") + flags + keepalive
    if mqtt5:
        variable += b"\x05\x11\xff\xff\xff\xff"  # properties: session expiry 0xFFFFFFFF
    body = variable + len(client_id).to_bytes(2, "big") + client_id
    return b"\x10" + bytes([len(body)]) + body


def _connack(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    return sock.recv(64)


@pytest.mark.parametrize("mqtt5", [False, True], ids=["mqtt3.1.1", "mqtt5"])
def test_mosquitto_closes_a_taken_over_connection_without_a_disconnect_packet(
    broker: Mosquitto, *, mqtt5: bool
) -> None:
    """Why the bridge infers: mosquitto 2.0.11 sends no DISCONNECT 0x8E 'Session taken over',
    not even to an MQTT 5 client. Should a broker upgrade start sending it, this fails, and
    MQTT 5 with its reason code becomes worth the move (with clean start off and a session
    expiry, or the persistent session is lost)."""
    address = ("127.0.0.1", broker.port)
    with socket.create_connection(address) as first:
        first.sendall(_connect_packet(b"same", mqtt5=mqtt5))
        assert _connack(first)[:1] == b"\x20"
        with socket.create_connection(address) as second:
            second.sendall(_connect_packet(b"same", mqtt5=mqtt5))
            assert _connack(second)[:1] == b"\x20"
            assert first.recv(64) == b""  # closed, with nothing sent before


async def _intruder(port: int, stop: asyncio.Event, connects: list[float]) -> None:
    """A stray client with the bridge's id that reconnects 0.3 s after being knocked off, as
    a second bridge or a client with automatic reconnection does."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        try:
            async with aiomqtt.Client(
                "127.0.0.1", port, identifier=CLIENT_ID, clean_session=False
            ) as client:
                connects.append(loop.time())
                waiting = asyncio.ensure_future(stop.wait())
                kicked = asyncio.ensure_future(anext(client.messages))
                await asyncio.wait({waiting, kicked}, return_when=asyncio.FIRST_COMPLETED)
                for task in (waiting, kicked):
                    task.cancel()
                await asyncio.gather(waiting, kicked, return_exceptions=True)
        except aiomqtt.MqttError:
            pass
        await asyncio.sleep(0.3)


def _names(logs: list[dict[str, Any]]) -> Counter[str]:
    return Counter(entry["event"] for entry in logs)


@pytest.mark.slow
async def test_a_stray_client_with_our_id_is_reported_once_and_not_fought(
    broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Time compressed: waits of 4 s then 8 s stand for the minutes, a 5 s life for 30 s.
    monkeypatch.setattr(takeover, "SHORT_LIVED_SECONDS", 5.0)
    monkeypatch.setattr(takeover, "BACKOFF_FIRST_SECONDS", 4.0)
    monkeypatch.setattr(takeover, "BACKOFF_MAX_SECONDS", 8.0)
    fake = FakeGo2Clock(api_key=API_KEY)
    stop = asyncio.Event()
    intruder_connects: list[float] = []
    with capture_logs() as logs:
        async with running_fake_go2clock(fake) as url:
            settings = settings_from(
                write_config(tmp_path, broker_port=broker.port, go2clock_url=url)
            )
            async with running_bridge(settings):
                intruder = asyncio.create_task(
                    _intruder(broker.port, stop, intruder_connects), name="intruder"
                )
                try:
                    await wait_until(
                        _logged(logs, "mqtt.client_id_taken"), timeout=30, what="the error"
                    )
                    # Backing off: over 9 s (a 4 s wait, then 8 s) at most one reconnection,
                    # where fighting would have made about five.
                    taken_at = len(logs)
                    await asyncio.sleep(9.0)
                    assert _names(logs[taken_at:])["mqtt.connected"] <= 1
                    intruder_before = len(intruder_connects)
                finally:
                    stop.set()
                    await intruder
                # The intruder gone, the bridge comes back within its wait and delivers.
                await wait_until(
                    _logged(logs, "mqtt.client_id_free"), timeout=20, what="the id back"
                )
                await publish(broker.port, [(TOPIC, canonical(n)) for n in range(5)])
                await fake.wait_for_records(5, timeout=10)
    names = _names(logs)
    assert names["mqtt.client_id_taken"] == 1
    assert names["mqtt.client_id_free"] == 1
    error = next(entry for entry in logs if entry["event"] == "mqtt.client_id_taken")
    assert error["log_level"] == "error"
    assert error["client_id"] == CLIENT_ID
    assert error["hint"] == HINT
    assert "each bridge needs its own mqtt.client_id" in error["hint"]
    # No tight loop overall: the bridge connected a handful of times, the intruder at will.
    assert names["mqtt.connected"] <= 10, names
    assert intruder_before >= 4
    assert len(fake.records) == 5


def _logged(logs: list[dict[str, Any]], event: str):
    async def predicate() -> bool:
        return any(entry["event"] == event for entry in logs)

    return predicate
