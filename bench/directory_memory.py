"""Benchmark: the daemon's memory with a big people directory, and what a lookup costs ingest.

RSS: the bridge started with a directory CSV of 1,000 / 10,000 / 50,000 people (`badge,userid,
name,mctime_user_id`), then with 50,000 people from a Go2Clock directory source (the project's
fake, the CSV empty), each measured idle after start-up and one directory load (ready, then
--settle seconds; for the source, after its first sync is in the cache and merged): current RSS
and peak (VmHWM), against the same bridge with an empty directory (the reference, same run).

Lookup cost: --count events pre-published while the bridge is down, all from 10 badges that the
directory maps, drained by the bridge (go2clock sink paused, as bench/ingest.py does, so each
event gets its delivery row and feedback looks the name up too), with a directory of 10 people
and of 50,000, in --rounds rounds ordered ABBA: stored events per second (first to last
received_at) and the bridge's CPU time per event (utime + stime from ready to the last event
stored), their ratios per round and the medians. Plus the
lookup alone, in this process: Directory.lookup per call with 10 and 50,000 people (a
different badge each call, so its memo of the last answer never helps), against a lookup in a
dict of Person objects, what Directory held before it was packed.

    PYTHONPATH=. python bench/directory_memory.py [--quick] [--sizes 1000,10000,50000]
        [--count 20000] [--rounds 4] [--settle 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import statistics
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench import common
from bench.ingest import received_span
from bridge.directory.file import Directory
from bridge.events import normalise_badge

TARGET_RSS_MIB = 80.0
LOOKUP_BADGES = 10  # the badges the ingest runs swipe with: all mapped in both directories


def csv_text(people: int) -> str:
    rows = ["badge,userid,name,mctime_user_id"]
    rows += [f"B{n:05d},{10000 + n},Person {n},mc-{n}" for n in range(people)]
    return "\n".join(rows) + "\n"


def with_source(config: Path, url: str) -> None:
    """Turn the Go2Clock directory source on in a config write_config wrote."""
    settings = yaml.safe_load(config.read_text())
    settings["directory"]["sources"] = {
        "go2clock": {"enabled": True, "base_url": url, "api_key": common.API_KEY}
    }
    config.write_text(yaml.safe_dump(settings))


def synced(db: Path) -> bool:
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn,
    ):
        row = conn.execute("SELECT max(revision) FROM directory_sources").fetchone()
        return bool(row and row[0])
    return False


async def idle_rss(
    broker_port: int, people: int, args: argparse.Namespace, *, source: bool = False
) -> dict[str, Any]:
    work = common.workdir(f"dirmem-{'source' if source else 'csv'}-{people}")
    async with common.fake_go2clock() as (fake, url):
        config, http_port = common.write_config(work, broker_port=broker_port, people=0)
        if source:
            for n in range(people):
                fake.add_user(10000 + n, f"B{n:05d}", f"Person {n}", email=f"p{n}@example.com")
            with_source(config, url)
        else:
            (work / "directory.csv").write_text(csv_text(people))
        with common.running_bridge(config, http_port) as bridge:
            ready = await bridge.wait_ready(timeout=120)
            deadline = time.monotonic() + 120
            while source and not synced(work / "bridge.db") and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(args.settle)
            rss, peak = bridge.rss_mib()
    kind = "go2clock source" if source else "csv"
    print(
        f"  {kind:>15} {people:>6} people: ready {ready:.2f} s; RSS {rss:.1f} MiB, "
        f"peak {peak:.1f} MiB"
    )
    return {"kind": kind, "people": people, "rss_mib": round(rss, 1), "peak_mib": round(peak, 1)}


async def ingest_rate(
    broker_port: int, people: int, count: int, round_no: int
) -> tuple[float, float]:
    """(stored events per second, the bridge's CPU microseconds per event stored after it was
    ready: CPU time, unlike the rate, hardly moves when other work shares the cores)."""
    work = common.workdir(f"dirmem-ingest-{people}")
    async with common.fake_go2clock(api_key="not-the-bridges-key") as (_fake, url):
        config, http_port = common.write_config(
            work,
            broker_port=broker_port,
            people=people,
            go2clock_url=url,
            client_id=f"bench-dirmem-{people}-{round_no}",
        )
        await common.create_session(config, http_port)
        await common.publish_async(broker_port, count, people=LOOKUP_BADGES)
        db = work / "bridge.db"
        with common.running_bridge(config, http_port) as bridge:
            await bridge.wait_ready(timeout=120)
            cpu_before, stored_before = bridge.cpu_seconds(), common.db_max_id(db)
            deadline = time.monotonic() + 600
            while common.db_max_id(db) < count and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            cpu_us = (bridge.cpu_seconds() - cpu_before) / (count - stored_before) * 1e6
            await asyncio.sleep(0.5)
            unmapped = common.db_count(db, "SELECT count(*) FROM events WHERE status='unmapped'")
    span = received_span(db)
    rate = count / span
    print(
        f"  ingest, {people:>6} people: {count} events in {span:.2f} s = {rate:.0f}/s;"
        f" {cpu_us:.0f} us CPU per event ({unmapped} unmapped)"
    )
    return rate, cpu_us


def lookup_micro(people: int) -> tuple[float, float]:
    """Microseconds per Directory.lookup, and per lookup in a dict of Person objects (what
    Directory held before it was packed: the reference)."""
    directory = Directory.from_csv_text(csv_text(people))
    objects = {person.badge: person for person in directory.people()}
    badges = [f"b{n:05d}" for n in range(LOOKUP_BADGES)]  # lower case: normalised first
    assert all(directory.lookup(badge) for badge in badges)

    def per_call(lookup: Callable[[str], object]) -> float:
        loops = 50_000
        runs = timeit.repeat(
            lambda: [lookup(badge) for badge in badges], number=loops // len(badges), repeat=5
        )
        return min(runs) / loops * 1e6

    packed = per_call(directory.lookup)
    reference = per_call(lambda badge: objects.get(normalise_badge(badge)))
    return packed, reference


async def run(args: argparse.Namespace) -> None:
    big_n = max(args.sizes)
    common.header("directory memory: RSS with a big directory, and the lookup on ingest")
    work = common.workdir("dirmem-broker")
    with common.broker(work) as broker:
        reference = await idle_rss(broker.port, 0, args)
        rows = [await idle_rss(broker.port, n, args) for n in args.sizes]
        rows.append(await idle_rss(broker.port, max(args.sizes), args, source=True))
        for row in [reference, *rows]:
            row["rss_vs_empty_mib"] = round(row["rss_mib"] - reference["rss_mib"], 1)
            row["rss_ratio_to_empty"] = round(row["rss_mib"] / reference["rss_mib"], 3)
            common.result("directory_memory", **row)
        for row in rows:
            print(
                f"  {row['kind']:>15} {row['people']:>6}: {row['rss_mib']:.1f} MiB = empty "
                f"+ {row['rss_vs_empty_mib']:.1f} MiB ({row['rss_ratio_to_empty']:.2f} x); "
                f"<= {TARGET_RSS_MIB:g} MiB: "
                f"{'met' if row['rss_mib'] <= TARGET_RSS_MIB else 'NOT met'}"
            )
        ratios, cpu_ratios, smalls, bigs = [], [], [], []
        for round_no in range(args.rounds):  # ABBA: a machine growing busier hits both alike
            order = [LOOKUP_BADGES, big_n]
            measured = {
                people: await ingest_rate(broker.port, people, args.count, round_no)
                for people in (order if round_no % 2 == 0 else order[::-1])
            }
            (small_rate, small_cpu), (big_rate, big_cpu) = measured[LOOKUP_BADGES], measured[big_n]
            smalls.append(small_rate)
            bigs.append(big_rate)
            ratios.append(big_rate / small_rate)
            cpu_ratios.append(big_cpu / small_cpu)
    small, big = statistics.median(smalls), statistics.median(bigs)
    ratio, cpu_ratio = statistics.median(ratios), statistics.median(cpu_ratios)
    print(
        f"  ingest, {big_n} people vs {LOOKUP_BADGES} (medians of {args.rounds} rounds): "
        f"rate {big:.0f}/s vs {small:.0f}/s, ratio {ratio:.2f} (per round "
        f"{', '.join(f'{r:.2f}' for r in ratios)}); CPU per event ratio {cpu_ratio:.2f} "
        f"(per round {', '.join(f'{r:.2f}' for r in cpu_ratios)})"
    )
    common.result(
        "directory_lookup_ingest",
        small_people=LOOKUP_BADGES,
        big_people=big_n,
        events=args.count,
        small_rate=round(small),
        big_rate=round(big),
        ratio=round(ratio, 3),
        ratios=[round(r, 3) for r in ratios],
        cpu_ratio=round(cpu_ratio, 3),
        cpu_ratios=[round(r, 3) for r in cpu_ratios],
    )
    (small_us, small_ref), (big_us, big_ref) = lookup_micro(LOOKUP_BADGES), lookup_micro(big_n)
    print(
        f"  one lookup: packed Directory {small_us:.2f} us with {LOOKUP_BADGES} people, "
        f"{big_us:.2f} us with {big_n}; a dict of Person objects (before): {small_ref:.2f} / "
        f"{big_ref:.2f} us"
    )
    common.result(
        "directory_lookup_call",
        small_us=round(small_us, 2),
        big_us=round(big_us, 2),
        dict_of_objects_small_us=round(small_ref, 2),
        dict_of_objects_big_us=round(big_ref, 2),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000; 5,000 events")
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=4, help="ingest runs per directory size")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        args.sizes, args.count, args.rounds = [1000, 10_000], 5000, 1
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
