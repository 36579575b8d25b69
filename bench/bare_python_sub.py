"""The ingest's Python references: a bare QoS 1 subscriber on paho-mqtt (the MQTT library under
aiomqtt) or on aiomqtt (the bridge's own client) that only counts messages: no parsing, no
SQLite, no feedback. What it reaches is the ceiling of any bridge written on that library on this
machine, as `mosquitto_sub` is the ceiling of a C client.

Its persistent session is created first (`--create-only`), like the bridge's, so the broker
queues the pre-published messages for it. Run as its own process, like the bridge.

    python bench/bare_python_sub.py --port P --library paho|aiomqtt --count N [--create-only]

Prints one JSON line: messages, seconds from the first message to the last, rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiomqtt
import paho.mqtt.client as mqtt

TOPIC = "clockin/+/events"


def with_paho(port: int, count: int, create_only: bool) -> dict[str, float]:
    times: list[float] = []  # first and last message
    received = 0
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="bench-paho", clean_session=False
    )
    client.on_connect = lambda c, *_: c.subscribe(TOPIC, qos=1)

    def on_message(c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        nonlocal received
        _note(times, time.monotonic())
        received += 1
        if received >= count:
            c.disconnect()

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    if create_only:
        client.loop_start()
        time.sleep(1)
        client.disconnect()
        client.loop_stop()
        return _summary(0, times)
    client.loop_forever()
    return _summary(received, times)


async def with_aiomqtt(port: int, count: int, create_only: bool) -> dict[str, float]:
    times: list[float] = []
    received = 0
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="bench-aiomqtt", clean_session=False
    ) as client:
        await client.subscribe(TOPIC, qos=1)
        if create_only:
            return _summary(0, times)
        async for _message in client.messages:
            _note(times, time.monotonic())
            received += 1
            if received >= count:
                break
    return _summary(received, times)


def _note(times: list[float], now: float) -> None:
    """Keep the first and the latest time."""
    times[min(len(times), 1) :] = [now]


def _summary(received: int, times: list[float]) -> dict[str, float]:
    seconds = times[-1] - times[0] if len(times) > 1 else float("nan")
    return {
        "messages": received,
        "seconds": round(seconds, 3),
        "rate": round(received / seconds, 1) if seconds > 0 else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--library", choices=["paho", "aiomqtt"], required=True)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--create-only", action="store_true")
    args = parser.parse_args()
    if args.library == "paho":
        result = with_paho(args.port, args.count, args.create_only)
    else:
        result = asyncio.run(with_aiomqtt(args.port, args.count, args.create_only))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
