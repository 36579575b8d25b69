"""Benchmark 6: terminal feedback latency, publish -> the bridge's ack message on
`clockin/{terminal}/ack` (issue: "within 100 ms", so a kiosk can greet the person).

A paho client publishes QoS 1 swipes at a fixed rate and, on the same connection, subscribes
to the ack topic; latency is the time from handing a swipe to paho to receiving its ack (both on
this process's monotonic clock). Reference, same run: the same client's own message coming back
to it through the broker (what MQTT alone costs).

    PYTHONPATH=. python bench/feedback.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from datetime import UTC, datetime

import paho.mqtt.client as mqtt

from bench import common

TARGET_MS = 100.0


class Terminal:
    """Publishes swipes and hears their acks (and, as the reference, its own swipes)."""

    def __init__(self, port: int) -> None:
        self.sent: dict[str, float] = {}
        self.acked: dict[str, float] = {}
        self.echoed: dict[str, float] = {}
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-kiosk")
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.subscribe([("clockin/kiosk/ack", 1), ("clockin/kiosk/events", 1)])
        self._client.loop_start()

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        body = json.loads(message.payload)
        target = self.acked if message.topic.endswith("/ack") else self.echoed
        with self._lock:
            target[str(body["id"])] = now

    def swipe(self, n: int, people: int) -> None:
        ident = f"f{n}"
        payload = {
            "id": ident,
            "badge": f"P{n % people:05d}",
            "action": "in",
            "time": datetime.now(UTC).isoformat(),
        }
        self.sent[ident] = time.monotonic()
        self._client.publish("clockin/kiosk/events", json.dumps(payload), qos=1)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def latencies(sent: dict[str, float], got: dict[str, float]) -> list[float]:
    return [(got[k] - t) * 1000 for k, t in sent.items() if k in got]


def stats(values: list[float]) -> str:
    if not values:
        return "none"
    return (
        f"n {len(values)}, p50 {common.percentile(values, 50):.1f} ms, "
        f"p99 {common.percentile(values, 99):.1f} ms, max {max(values):.1f} ms"
    )


async def run(args: argparse.Namespace) -> None:
    common.header("feedback: publish -> ack on clockin/{terminal}/ack")
    work = common.workdir("feedback")
    people = 5000
    with common.broker(work) as broker:
        async with common.fake_go2clock() as (_fake, url):
            config, http_port = common.write_config(
                work, broker_port=broker.port, people=people, go2clock_url=url
            )
            with common.running_bridge(config, http_port) as bridge:
                await bridge.wait_ready()
                terminal = Terminal(broker.port)
                await asyncio.sleep(1.0)
                n = 0
                for rate in args.rates:
                    terminal.sent.clear()
                    count = int(rate * args.seconds)
                    for _ in range(count):
                        terminal.swipe(n, people)
                        n += 1
                        await asyncio.sleep(1 / rate)
                    await asyncio.sleep(2.0)
                    acks = latencies(terminal.sent, terminal.acked)
                    echo = latencies(terminal.sent, terminal.echoed)
                    p99 = common.percentile(acks, 99) if acks else float("inf")
                    print(f"  {rate:g} swipes/s for {args.seconds:g} s ({count} swipes)")
                    print(f"    ack from the bridge: {stats(acks)}")
                    print(f"    own message back through the broker (reference): {stats(echo)}")
                    print(
                        f"    target: ack within {TARGET_MS:g} ms (p99): "
                        f"{'met' if p99 <= TARGET_MS else 'NOT met'}"
                    )
                    common.result(
                        "feedback",
                        rate=rate,
                        count=count,
                        acked=len(acks),
                        p50_ms=round(common.percentile(acks, 50), 1) if acks else None,
                        p99_ms=round(p99, 1),
                        echo_p99_ms=round(common.percentile(echo, 99), 1) if echo else None,
                    )
                terminal.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 s per rate")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 100.0])
    args = parser.parse_args()
    if args.quick:
        args.seconds = 5.0
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
