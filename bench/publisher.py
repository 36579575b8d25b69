"""A real MQTT client (paho) publishing canonical badge events with QoS 1.

Run as its own process by the benchmarks: `python bench/publisher.py --port P --count N
[--rate R] [--stamp]`. Prints one JSON line: published, acknowledged (PUBACKs received), seconds.

Event i: terminal gate{i % 4}, badge B{i % people:05d}, id bench-{start + i}; the action
alternates in/out per badge, so no double swipe. --time-mode spaced: times 1 s apart ending now
(a backlog); now: the time of publishing (live traffic; use people >= count so no badge repeats
inside the 60 s double-swipe window). --stamp puts time.monotonic() at publishing in `note`,
so a fake vendor can compute the latency from the request it receives.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt


def payload(i: int, *, start: int, people: int, base: datetime | None, stamp: bool) -> bytes:
    n = start + i
    moment = datetime.now(UTC) if base is None else base + timedelta(seconds=i)
    body = {
        "id": f"bench-{n}",
        "badge": f"B{n % people:05d}",
        "action": "in" if (n // people) % 2 == 0 else "out",
        "time": moment.isoformat(),
    }
    if stamp:
        body["note"] = f"{time.monotonic():.6f}"
    return json.dumps(body, separators=(",", ":")).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="events/s; 0: as fast as it can")
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--time-mode", choices=["spaced", "now"], default="spaced")
    parser.add_argument("--stamp", action="store_true")
    parser.add_argument("--client-id", default="")
    args = parser.parse_args()

    acked = 0
    done = threading.Event()
    lock = threading.Lock()

    def on_publish(_client: object, _userdata: object, _mid: int, *_rest: object) -> None:
        nonlocal acked
        with lock:
            acked += 1
            if acked >= args.count:
                done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect("127.0.0.1", args.port, keepalive=60)
    client.loop_start()
    base = None
    if args.time_mode == "spaced":
        base = datetime.now(UTC) - timedelta(seconds=args.count)
    began = time.monotonic()
    for i in range(args.count):
        # MQTT message ids are 16 bits: with more than 65,535 unacknowledged publications paho
        # reuses ids still in use and loses their acknowledgements (the same limit that makes
        # `mosquitto_pub -l` stop), so keep at most 30,000 outstanding.
        while i - acked > 30_000:
            time.sleep(0.005)
        if args.rate > 0:
            due = began + i / args.rate
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
        client.publish(
            f"clockin/gate{(args.start + i) % 4}/events",
            payload(i, start=args.start, people=args.people, base=base, stamp=args.stamp),
            qos=1,
        )
    done.wait(timeout=600)
    seconds = time.monotonic() - began
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"published": args.count, "acknowledged": acked, "seconds": seconds}))


if __name__ == "__main__":
    main()
