"""Back-pressure on the broker (ReadGate in bridge/ingest/mqtt.py): however much the broker has
queued for the bridge's session, no more than the gate's high mark waits in the bridge's memory."""

from __future__ import annotations

import asyncio

import pytest

from bridge.config import MqttConfig
from bridge.ingest.client import connected
from bridge.ingest.mqtt import ReadGate, acknowledge
from tests.broker import Mosquitto
from tests.harness import publish

TOPIC = "clockin/+/events"
QUEUED = 3000
HIGH, LOW = 200, 100


async def _queue_for_offline_session(broker: Mosquitto, config: MqttConfig) -> None:
    async with connected(config) as client:  # creates the persistent session
        await client.subscribe(TOPIC, qos=1)
    messages = ((f"clockin/gate{n % 4}/events", f"m{n}".encode()) for n in range(QUEUED))
    assert await publish(broker.port, messages) == QUEUED


async def _consume_slowly(config: MqttConfig, *, gated: bool) -> tuple[set[bytes], int, int]:
    """Resume the session and consume like the bridge, a little slower than the broker sends,
    acknowledging each message; returns what arrived, the most ever waiting, and the pauses."""
    seen: set[bytes] = set()
    most_waiting = 0
    async with connected(config) as client:
        gate = ReadGate(client, high=HIGH, low=LOW)
        if gated:
            gate.install()
        await client.subscribe(TOPIC, qos=1)
        async with asyncio.timeout(60):
            async for message in client.messages:
                most_waiting = max(most_waiting, len(client.messages))
                seen.add(bytes(message.payload))
                acknowledge(client, message)
                gate.resume_if_drained()
                await asyncio.sleep(0.0005)
                if len(seen) == QUEUED:
                    break
    return seen, most_waiting, gate.pauses


async def test_no_more_than_the_high_mark_waits_in_memory(broker: Mosquitto):
    config = MqttConfig(port=broker.port, client_id="flow-gated")
    await _queue_for_offline_session(broker, config)

    seen, most_waiting, pauses = await _consume_slowly(config, gated=True)

    assert len(seen) == QUEUED  # everything arrives, nothing is lost to the pauses
    assert most_waiting <= HIGH
    assert pauses > 0


async def test_without_the_gate_the_broker_sends_its_whole_queue(broker: Mosquitto):
    """Why the gate exists: with acknowledgements flowing, mosquitto 2.0 does not hold its
    max_inflight_messages (100 in tests/broker.py) for a resumed session."""
    config = MqttConfig(port=broker.port, client_id="flow-ungated")
    await _queue_for_offline_session(broker, config)

    seen, most_waiting, _ = await _consume_slowly(config, gated=False)

    assert len(seen) == QUEUED
    if most_waiting <= 100:
        pytest.skip("this broker holds its in-flight limit: the gate is only a safeguard here")
    assert most_waiting > HIGH


def test_low_mark_below_high_mark():
    async def make() -> None:
        ReadGate(object(), high=10, low=10)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="low < high"):
        asyncio.run(make())
