"""Benchmark 3: backlog drain.

Part A: N events (default 100,000) for 2,000 people are queued directly in SQLite through the
bridge's own Store.ingest (no MQTT: only the drain is measured), then the bridge starts with
Go2Clock concurrency 16 against the fake Go2Clock answering after 20 ms. Drain rate = events /
(last request - first request), against the ideal concurrency / latency = 800/s.

Part B: McTime with rate_per_second 10 against its fake (which answers 429 above 10 requests in
any 1 s window): M events (default 600) for 20 people, alternating in/out. Every request counts
(a first punch of a person may also GET the clock); the figure is requests/s over the run and
the most requests in any 1 s window, against the limit 10.

    PYTHONPATH=. python bench/drain.py [--quick] [--count N] [--mctime-count M] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench import common
from bridge.vendors.mctime.simulator import FakeMcTime, running_fake_mctime

LATENCY = 0.020
CONCURRENCY = 16
IDEAL = CONCURRENCY / LATENCY


async def bare_client_rate(latency: float, count: int) -> tuple[float, float]:
    """The reference: a bare aiohttp client (its own process) against a fake like the bridge's,
    same concurrency and latency: what this machine, the fake and aiohttp allow. Returns the
    rate and the fake's mean time per request in its handler (asked for: `latency`)."""
    async with common.fake_go2clock(delay=latency) as (fake, url):
        process = await asyncio.create_subprocess_exec(
            common.PY,
            str(common.ROOT / "bench" / "bare_client.py"),
            "--url",
            url,
            "--key",
            common.API_KEY,
            "--count",
            str(count),
            "--concurrency",
            str(CONCURRENCY),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
    return float(json.loads(out)["rate"]), fake.mean_held()


async def go2clock_part(args: argparse.Namespace) -> None:
    work = common.workdir("drain")
    n = args.count
    reference_count = min(n, 20_000)
    bare, bare_held = await bare_client_rate(args.latency, reference_count)
    print(
        f"  A: reference, bare aiohttp client ({CONCURRENCY} in flight, no queue): "
        f"{reference_count} PUTs at {bare:.0f}/s = {bare / IDEAL:.1%} of the ideal "
        f"{IDEAL:.0f}/s; "
        f"the fake held each {bare_held * 1000:.2f} ms on average "
        f"({bare / (CONCURRENCY / bare_held):.1%} of {CONCURRENCY} / that)"
    )
    built = await common.build_backlog_via_store(work, n, people=2000, sinks={"go2clock": "userid"})
    print(f"  A: {n} events for 2000 people queued through Store.ingest in {built:.1f} s")
    with common.broker(work) as broker:
        async with common.fake_go2clock(delay=args.latency) as (fake, url):
            config, http_port = common.write_config(
                work,
                broker_port=broker.port,
                people=2000,
                go2clock_url=url,
                concurrency=CONCURRENCY,
            )
            profile = work / "drain.pyspy.txt" if args.profile else None
            with common.running_bridge(config, http_port, profile=profile) as bridge:
                began = time.monotonic()
                while fake.created_count < n and time.monotonic() - began < 1200:
                    await asyncio.sleep(0.1)
                    if bridge.process and bridge.process.poll() is not None:
                        msg = f"bridge exited: {bridge.tail()}"
                        raise SystemExit(msg)
                rss = bridge.rss_mib()
    times = [r["received_at"] for r in fake.requests]
    span = max(times) - min(times)
    rate = (len(times) - 1) / span
    ideal = CONCURRENCY / args.latency
    held = fake.mean_held()
    doubles = sum(1 for c in fake.punches_by_key().values() if c > 1)
    print(
        f"  A: {fake.created_count} punches created, {len(times)} requests, "
        f"{fake.duplicate_answers} duplicate answers, {doubles} stored twice; drained in "
        f"{span:.1f} s = {rate:.0f}/s; ideal {CONCURRENCY}/{args.latency * 1000:g} ms = "
        f"{ideal:.0f}/s; ratio {rate / ideal:.1%} (target >= 90%: "
        f"{'met' if rate / ideal >= 0.9 else 'NOT met'}); {rate / bare:.1%} of the bare client; "
        f"peak RSS {rss[1]:.0f} MiB"
    )
    print(
        f"  A: the fake held each request {held * 1000:.2f} ms on average (asked for "
        f"{args.latency * 1000:g} ms: asyncio's timer overshoot); against {CONCURRENCY} / that "
        f"= {CONCURRENCY / held:.0f}/s the bridge reached {rate / (CONCURRENCY / held):.1%}"
    )
    if profile is not None:
        print(f"  py-spy profile: {profile}")
    common.result(
        "drain",
        events=n,
        created=fake.created_count,
        seconds=round(span, 1),
        rate=round(rate),
        ideal=round(ideal),
        ratio=round(rate / ideal, 3),
        bare_client_rate=round(bare),
        ratio_to_bare=round(rate / bare, 3),
        fake_mean_held_ms=round(held * 1000, 2),
        ratio_to_held=round(rate / (CONCURRENCY / held), 3),
        peak_rss_mib=round(rss[1], 1),
    )


async def mctime_part(args: argparse.Namespace) -> None:
    work = common.workdir("drain-mctime")
    m = args.mctime_count
    people = 20
    built = await common.build_backlog_via_store(
        work, m, people=people, sinks={"mctime": "mctime_user_id"}, spacing=5.0
    )
    # 5 s apart: a person's same action repeats after 200 s, outside the double-swipe window
    print(f"  B: {m} events for {people} people queued through Store.ingest in {built:.1f} s")
    fake = FakeMcTime(api_key=common.MCTIME_KEY)
    with common.broker(work) as broker:
        async with running_fake_mctime(fake) as url:
            config, http_port = common.write_config(
                work,
                broker_port=broker.port,
                people=people,
                mctime_url=url,
                concurrency=4,
            )
            with common.running_bridge(config, http_port):
                began = time.monotonic()
                open_sql = "SELECT count(*) FROM deliveries WHERE state IN ('pending', 'inflight')"
                while time.monotonic() - began < m / 5 + 120:
                    await asyncio.sleep(0.5)
                    if common.db_count(work / "bridge.db", open_sql) == 0:
                        break
    times = sorted(r["time"] for r in fake.requests)
    span = times[-1] - times[0]
    rate = (len(times) - 1) / span
    worst = fake.max_requests_in_any_second()
    refused = sum(1 for r in fake.requests if r.get("answer") == 429)
    print(
        f"  B: {len(fake.posts())} POSTs + {len(fake.gets())} GETs = {len(times)} requests in "
        f"{span:.1f} s = {rate:.2f} requests/s (limit 10: ratio {rate / 10:.1%}); most in any "
        f"1 s window {worst}; 429 answers {refused}; target never above 10 and within 5%: "
        f"{'met' if worst <= 10 and rate >= 9.5 else 'NOT met'}"
    )
    common.result(
        "drain_mctime",
        events=m,
        requests=len(times),
        seconds=round(span, 1),
        rate=round(rate, 2),
        limit=10,
        ratio=round(rate / 10, 3),
        max_in_any_second=worst,
        answers_429=refused,
    )


async def run(args: argparse.Namespace) -> None:
    common.header("drain: backlog drain rate against concurrency / latency, and McTime's limit")
    if not args.skip_go2clock:
        await go2clock_part(args)
    if not args.skip_mctime:
        await mctime_part(args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5,000 and 100 events")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--mctime-count", type=int, default=600)
    parser.add_argument("--latency", type=float, default=LATENCY, help="fake's delay, seconds")
    parser.add_argument("--skip-go2clock", action="store_true")
    parser.add_argument("--skip-mctime", action="store_true")
    parser.add_argument("--profile", action="store_true", help="run the bridge under py-spy")
    args = parser.parse_args()
    if args.quick:
        args.count, args.mctime_count = min(args.count, 5000), min(args.mctime_count, 100)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
