"""Benchmark 5: the same workloads through the naive script (bench/naive_bridge.py: paho +
urllib PUT per message), for the comparison table in docs/BENCHMARKS.md.

- throughput: N events pre-published to its persistent session while it is down, then it
  drains them to a zero-latency fake Go2Clock; rate = requests / (last - first). (The bridge's
  counterpart: bench/ingest.py stores, bench/drain.py sends; the naive script does both in one.)
- latency at 1/s and 500/s to the zero-latency fake (same method as bench/latency.py);
- drain against the fake with 20 ms latency (it sends one at a time: at most 50/s).

    PYTHONPATH=. python bench/naive.py [--quick] [--count 20000] [--drain-count 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from bench import common


@contextlib.contextmanager
def naive(port: int, url: str, directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [
            common.PY,
            str(common.ROOT / "bench" / "naive_bridge.py"),
            "--port",
            str(port),
            "--url",
            url,
            "--key",
            common.API_KEY,
            "--directory",
            str(directory),
        ],
        env={**os.environ, "PYTHONPATH": str(common.ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=(directory.parent / "naive.log").open("wb"),
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_requests(fake: common.FastFakeGo2Clock, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(fake.requests) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def backlog(*, delay: float, count: int, name: str) -> None:
    work = common.workdir(f"naive-{name}")
    common.write_directory(work / "directory.csv", 2000)
    with common.broker(work) as broker:
        async with common.fake_go2clock(delay=delay) as (fake, url):
            with naive(broker.port, url, work / "directory.csv"):  # creates the session
                await asyncio.sleep(1.5)
            pub = await common.publish_async(broker.port, count, people=2000)
            with naive(broker.port, url, work / "directory.csv"):
                await wait_requests(fake, count, timeout=count * (delay + 0.01) + 120)
    times = [r["received_at"] for r in fake.requests]
    rate = (len(times) - 1) / (max(times) - min(times))
    print(
        f"  {name}: {len(times)}/{pub['acknowledged']} requests, {fake.created_count} created, "
        f"fake latency {delay * 1000:g} ms: {rate:.0f}/s"
    )
    common.result(
        f"naive_{name}",
        events=count,
        requests=len(times),
        created=fake.created_count,
        fake_latency_ms=delay * 1000,
        rate=round(rate),
    )


async def latency(args: argparse.Namespace) -> None:
    from bench.latency import summary

    work = common.workdir("naive-latency")
    phases = [(1.0, args.slow_seconds), (500.0, args.fast_seconds)]
    total = sum(int(rate * seconds) for rate, seconds in phases)
    common.write_directory(work / "directory.csv", total + 10)
    with common.broker(work) as broker:
        async with common.fake_go2clock() as (fake, url):
            with naive(broker.port, url, work / "directory.csv"):
                await asyncio.sleep(1.5)
                start = 0
                for rate, seconds in phases:
                    count = int(rate * seconds)
                    fake.requests.clear()
                    await common.publish_async(
                        broker.port,
                        count,
                        rate=rate,
                        people=total + 10,
                        start=start,
                        stamp=True,
                        time_mode="now",
                    )
                    start += count
                    await wait_requests(fake, count, timeout=60)
                    got = [
                        r["received_at"] - float(r["form"]["eventdescription"])
                        for r in fake.requests
                    ]
                    stats = summary(got)
                    print(
                        f"  latency at {rate:g}/s: {stats['n']}/{count} requests, p50 "
                        f"{stats['p50_ms']} ms, p99 {stats['p99_ms']} ms, max {stats['max_ms']} ms"
                    )
                    common.result("naive_latency", rate=rate, seconds=seconds, naive=stats)


async def run(args: argparse.Namespace) -> None:
    common.header("naive: paho + urllib PUT per message")
    await backlog(delay=0.0, count=args.count, name="throughput")
    await latency(args)
    await backlog(delay=0.020, count=args.drain_count, name="drain20ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--drain-count", type=int, default=1000)
    parser.add_argument("--slow-seconds", type=float, default=60.0)
    parser.add_argument("--fast-seconds", type=float, default=30.0)
    args = parser.parse_args()
    if args.quick:
        args.count, args.drain_count, args.slow_seconds, args.fast_seconds = 2000, 200, 10, 5
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
