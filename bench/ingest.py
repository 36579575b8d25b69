"""Benchmark 1: durable ingest rate, against a bare QoS 1 subscriber on the same broker.

Method (pre-published drain): both consumers' persistent sessions are created first, then a
paho publisher sends N QoS 1 events while both are offline, so the broker holds N messages for
each. Then the bare subscriber (`mosquitto_sub -c -q 1 -C N`) drains its queue, timed from its
start to its exit; then two bare Python subscribers that only count (bench/bare_python_sub.py:
one on paho-mqtt, one on aiomqtt, the bridge's client library), timed from their first message
to their last, each the ceiling of any bridge written on that library; then the bridge drains its
queue, timed from the first to the last stored
event's `received_at` in SQLite (the bridge's own start-up is benchmark 4). The publisher does not
compete for the 2 cores while the consumers are measured, and the broker always has work ready,
so this is the consumer's ceiling. Acknowledgement is checked with the broker's
$SYS/broker/store/messages/count, which falls back once the bridge has PUBACKed everything.

The bridge runs at log level warning with feedback to terminals on (the shipped default) and one
sink, Go2Clock, pointed at a fake that refuses the API key: the sink pauses after the first
requests, so each event still gets its delivery row (the real write) but nothing is sent.
`--sink none` disables every sink instead (no delivery rows).

    PYTHONPATH=. python bench/ingest.py [--quick] [--count N] [--sink paused|none]
        [--no-feedback] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt

from bench import common

TARGET_RATE = 5000.0
TARGET_RATIO = 0.25
PYTHON_LIBRARIES = ("paho", "aiomqtt")


class StoreCount:
    """Follows $SYS/broker/store/messages/count (published every second)."""

    def __init__(self, port: int) -> None:
        self.values: list[tuple[float, int]] = []
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self._client.on_message = self._on_message
        self._client.on_connect = lambda c, *_: c.subscribe("$SYS/broker/store/messages/count")
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        self._changed = threading.Event()

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        self.values.append((time.monotonic(), int(message.payload)))
        self._changed.set()

    def latest(self) -> int:
        deadline = time.monotonic() + 5
        while not self.values and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.values[-1][1] if self.values else -1

    async def wait_at_most(self, limit: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.values and self.values[-1][1] <= limit:
                return self.values[-1][0]
            await asyncio.sleep(0.2)
        return None

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def bare_subscriber(port: int, count: int, out: Path, *, create_only: bool = False) -> float:
    command = [
        "mosquitto_sub",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-c",
        "-i",
        "bench-bare",
        "-q",
        "1",
        "-t",
        "clockin/+/events",
    ]
    command += ["-W", "1"] if create_only else ["-C", str(count)]
    began = time.monotonic()
    with out.open("wb") as sink:
        subprocess.run(
            command, stdout=sink, stderr=subprocess.DEVNULL if create_only else None, check=False
        )
    return time.monotonic() - began


def python_subscriber(port: int, library: str, count: int, *, create_only: bool = False) -> dict:
    """bench/bare_python_sub.py in its own process: the ceiling of a Python client on `library`."""
    command = [
        sys.executable,
        str(Path(__file__).with_name("bare_python_sub.py")),
        "--port",
        str(port),
        "--library",
        library,
        "--count",
        str(count),
    ]
    command += ["--create-only"] if create_only else []
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


def received_span(db: Path) -> float:
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        first, last = c.execute("SELECT min(received_at), max(received_at) FROM events").fetchone()
    parse = lambda text: datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: E731
    return (parse(last) - parse(first)).total_seconds()


async def run(args: argparse.Namespace) -> None:
    common.header("ingest: durable ingest vs a bare QoS 1 subscriber")
    n = args.count
    work = common.workdir("ingest")
    print(f"  events: {n}; sink: {args.sink}; feedback: {not args.no_feedback}; workdir {work}")
    with common.broker(work) as broker:
        async with common.fake_go2clock(api_key="not-the-bridges-key") as (_fake, url):
            config, http_port = common.write_config(
                work,
                broker_port=broker.port,
                people=2000,
                go2clock_url=url if args.sink == "paused" else None,
                ack_topic=None if args.no_feedback else "clockin/{terminal}/ack",
            )
            await common.create_session(config, http_port)
            bare_subscriber(broker.port, 0, work / "bare.txt", create_only=True)
            for library in PYTHON_LIBRARIES:
                python_subscriber(broker.port, library, 0, create_only=True)
            store = StoreCount(broker.port)
            await asyncio.sleep(1.5)
            baseline = store.latest()

            pub = await common.publish_async(broker.port, n, people=2000)
            print(
                f"  publisher (paho, QoS 1): {pub['acknowledged']}/{n} acknowledged by the "
                f"broker in {pub['seconds']:.1f} s ({pub['acknowledged'] / pub['seconds']:.0f}/s)"
            )
            if pub["acknowledged"] != n:
                raise SystemExit("the broker did not take every message")

            bare_seconds = await asyncio.to_thread(
                bare_subscriber, broker.port, n, work / "bare.txt"
            )
            bare_got = sum(1 for _ in (work / "bare.txt").open("rb"))
            bare_rate = bare_got / bare_seconds
            print(
                f"  bare mosquitto_sub -q 1: {bare_got} messages in {bare_seconds:.2f} s "
                f"= {bare_rate:.0f}/s"
            )
            python_rates = {}
            for library in PYTHON_LIBRARIES:
                got = await asyncio.to_thread(python_subscriber, broker.port, library, n)
                python_rates[library] = got["rate"]
                print(
                    f"  bare Python subscriber on {library} (QoS 1, counts only): "
                    f"{got['messages']} messages in {got['seconds']:.2f} s = {got['rate']:.0f}/s "
                    f"= {got['rate'] / bare_rate:.1%} of mosquitto_sub"
                )

            db = work / "bridge.db"
            profile = work / "ingest.pyspy.txt" if args.profile else None
            with common.running_bridge(config, http_port, profile=profile) as bridge:
                began = time.monotonic()
                stored = 0
                while time.monotonic() - began < 600:
                    await asyncio.sleep(0.05)
                    with contextlib.suppress(Exception):
                        stored = common.db_max_id(db)
                    if stored >= n:
                        break
                    if bridge.process and bridge.process.poll() is not None:
                        msg = f"bridge exited: {bridge.tail()}"
                        raise SystemExit(msg)
                wall = time.monotonic() - began
                acked_at = await store.wait_at_most(baseline + 5, timeout=30)
                acked = acked_at is not None
                rss = bridge.rss_mib()
            store.close()
            span = received_span(db)
            rate = stored / span if span > 0 else float("nan")
            ratio = rate / bare_rate
            print(
                f"  bridge: {stored} events stored in {span:.2f} s (first to last "
                f"received_at) = {rate:.0f}/s; {wall:.2f} s wall from process start incl. "
                f"start-up; broker queue back to baseline (all PUBACKed): {acked}; "
                f"RSS {rss[0]:.0f} MiB (peak {rss[1]:.0f})"
            )
            for library, python_rate in python_rates.items():
                print(f"  ratio to the bare {library} subscriber: {rate / python_rate:.1%}")
            print(
                f"  ratio to bare subscriber: {ratio:.1%} (target >= {TARGET_RATIO:.0%}); "
                f"rate target >= {TARGET_RATE:.0f}/s: "
                f"{'met' if rate >= TARGET_RATE else 'NOT met'}"
            )
            if profile is not None:
                print(f"  py-spy profile (raw collapsed stacks): {profile}")
            common.result(
                "ingest",
                events=stored,
                sink=args.sink,
                feedback=not args.no_feedback,
                bridge_rate=round(rate),
                bare_rate=round(bare_rate),
                ratio=round(ratio, 3),
                python_rates={k: round(v) for k, v in python_rates.items()},
                publisher_rate=round(pub["acknowledged"] / pub["seconds"]),
                all_acked=acked,
                peak_rss_mib=round(rss[1], 1),
                profile=str(profile) if profile else None,
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10,000 events (smoke run)")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--sink", choices=["paused", "none"], default="paused")
    parser.add_argument("--no-feedback", action="store_true", help="mqtt.ack_topic: null")
    parser.add_argument("--profile", action="store_true", help="run the bridge under py-spy")
    args = parser.parse_args()
    if args.quick:
        args.count = min(args.count, 10_000)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
