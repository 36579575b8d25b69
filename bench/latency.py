"""Benchmark 2: latency from publish to the request arriving at a zero-latency fake Go2Clock.

A paho publisher (its own process) publishes live QoS 1 events at a fixed rate, each carrying
time.monotonic() at publishing in its `note` (sent to Go2Clock as `eventdescription`); the fake
Go2Clock (in this process) records time.monotonic() when each PUT arrives. CLOCK_MONOTONIC is
system-wide, so the difference is the latency. Every event is a different person (people =
events), so neither the double-swipe window nor per-person ordering delays anything.

Reference, same run, same messages: a bare paho QoS 1 subscriber (a thread in this process)
receiving the same publications: that is what the broker and MQTT alone cost.
The bridge runs with its defaults (go2clock concurrency 4, feedback on), log level warning.

    PYTHONPATH=. python bench/latency.py [--quick] [--slow-seconds 60] [--fast-seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time

import paho.mqtt.client as mqtt

from bench import common

TARGET_P99_MS = 50.0


class BareSubscriber:
    def __init__(self, port: int) -> None:
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-ref")
        self._client.on_message = self._on_message
        self._client.on_connect = lambda c, *_: c.subscribe("clockin/+/events", qos=1)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        import json

        stamp = float(json.loads(message.payload)["note"])
        with self._lock:
            self.latencies.append(now - stamp)

    def take(self) -> list[float]:
        with self._lock:
            taken, self.latencies = self.latencies, []
        return taken

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(common.percentile(ms, 50), 2),
        "p99_ms": round(common.percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
    }


async def run(args: argparse.Namespace) -> None:
    common.header("latency: publish -> request at a zero-latency fake Go2Clock")
    work = common.workdir("latency")
    phases = [(1.0, args.slow_seconds), (args.fast_rate, args.fast_seconds)]
    total = sum(int(rate * seconds) for rate, seconds in phases)
    with common.broker(work) as broker:
        async with common.fake_go2clock() as (fake, url):
            config, http_port = common.write_config(
                work,
                broker_port=broker.port,
                people=total + 10,
                go2clock_url=url,
                log_level=args.log_level,
                ack_topic=None if args.no_feedback else common.DEFAULT_ACK_TOPIC,
            )
            reference = BareSubscriber(broker.port)
            profile = work / "latency.pyspy.txt" if args.profile else None
            with common.running_bridge(config, http_port, profile=profile) as bridge:
                await bridge.wait_ready()
                await asyncio.sleep(1.0)
                start = 0
                for rate, seconds in phases:
                    count = int(rate * seconds)
                    fake.requests.clear()
                    reference.take()
                    pub = await common.publish_async(
                        broker.port,
                        count,
                        rate=rate,
                        people=total + 10,
                        start=start,
                        stamp=True,
                        time_mode="now",
                        client_id=f"bench-pub-{int(rate)}",
                    )
                    start += count
                    deadline = time.monotonic() + 30
                    while len(fake.requests) < count and time.monotonic() < deadline:
                        await asyncio.sleep(0.1)
                    await asyncio.sleep(0.5)
                    got = [
                        r["received_at"] - float(r["form"]["eventdescription"])
                        for r in fake.requests
                    ]
                    ref = reference.take()
                    bridge_stats, ref_stats = summary(got), summary(ref)
                    ratio = bridge_stats["p99_ms"] / ref_stats["p99_ms"]
                    print(
                        f"  {rate:g} events/s for {seconds:g} s: published {pub['published']}"
                        f" (achieved {pub['published'] / pub['seconds']:.0f}/s)"
                    )
                    print(
                        f"    bridge -> Go2Clock: {bridge_stats['n']} requests, p50 "
                        f"{bridge_stats['p50_ms']} ms, p99 {bridge_stats['p99_ms']} ms, max "
                        f"{bridge_stats['max_ms']} ms"
                    )
                    print(
                        f"    bare MQTT subscriber: p50 {ref_stats['p50_ms']} ms, p99 "
                        f"{ref_stats['p99_ms']} ms, max {ref_stats['max_ms']} ms; "
                        f"p99 ratio bridge/bare {ratio:.1f}x"
                    )
                    if rate == 500.0:
                        print(
                            f"    target p99 <= {TARGET_P99_MS:g} ms at 500/s: "
                            f"{'met' if bridge_stats['p99_ms'] <= TARGET_P99_MS else 'NOT met'}"
                        )
                    common.result(
                        "latency",
                        rate=rate,
                        seconds=seconds,
                        bridge=bridge_stats,
                        bare=ref_stats,
                        p99_ratio=round(ratio, 2),
                        rss_mib=round(bridge.rss_mib()[1], 1),
                    )
            reference.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 s at 1/s, 5 s at 500/s")
    parser.add_argument("--slow-seconds", type=float, default=60.0)
    parser.add_argument("--fast-seconds", type=float, default=30.0)
    parser.add_argument("--fast-rate", type=float, default=500.0, help="events/s")
    parser.add_argument("--profile", action="store_true", help="run the bridge under py-spy")
    parser.add_argument("--no-feedback", action="store_true", help="terminal feedback off")
    parser.add_argument("--log-level", default="warning", help="the bridge's (debug: every claim)")
    args = parser.parse_args()
    if args.quick:
        args.slow_seconds, args.fast_seconds = 10.0, 5.0
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
