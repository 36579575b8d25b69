"""Retention at scale: a database of N delivered events spread over D days, pruned to K days.

Fills the real schema (the daemon's own Store.open creates and migrates it, so the counters'
triggers and auto_vacuum = INCREMENTAL are in force) with plain sqlite3 bulk inserts, then
measures the file size and Store.status() (what every /metrics scrape, the status page and the
outage summaries call) before and after one pruning round, the round itself (archive included),
and the table-scanning status queries of the release before, for comparison.

    .venv/bin/python bench/retention.py                      # 1,000,000 events, 400 -> 365 days
    .venv/bin/python bench/retention.py --events 5000000     # the scrape at 5 M events

Not a test: it takes a minute or more and a few hundred MB in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bridge.delivery import EventStatus
from bridge.events import Action, ClockEvent
from bridge.ops.metrics import Metrics
from bridge.store import Incoming, RetentionPolicy, Store, utc_text

SITE = ZoneInfo("Europe/Berlin")
SINK = "go2clock"
DAY = 86400.0
CHUNK = 50_000
UNDELIVERED_EVERY = 10_000  # one old dead delivery per this many events: it must survive

# What Store.status() ran before the counters (migration 8): a scan of whole tables.
OLD_STATUS = (
    "SELECT sink, state, COUNT(*), MIN(created_at) FROM deliveries GROUP BY sink, state",
    "SELECT status, COUNT(*) FROM events GROUP BY status",
    "SELECT COUNT(*) FROM rejected",
    "SELECT COUNT(*) FROM deliveries WHERE attempts > 1",
)


def rows(events: int, days: float, now: float) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    start, step = now - days * DAY, days * DAY / events
    for n in range(events):
        at = start + n * step
        moment = datetime.fromtimestamp(at, UTC)
        text = utc_text(moment)
        event = (
            n + 1,
            f"door-{n % 20}-{n}",
            f"door-{n % 20}",
            f"badge:B{n % 2000}",
            f"B{n % 2000}",
            "in" if n % 2 else "out",
            text,
            moment.astimezone(SITE).date().isoformat(),
            text,
            "clockin/door/events",
        )
        dead = n % UNDELIVERED_EVERY == 0
        delivery = (
            n + 1,
            SINK,
            f"p-{n % 2000}",
            text,
            "dead" if dead else "delivered",
            None if dead else "delivered",
            2 if n % 50 == 0 else 1,
            at,
            at,
            at + 1,
        )
        yield event, delivery


def fill(path: Path, *, events: int, days: float, now: float) -> float:
    started = time.perf_counter()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA synchronous = OFF")
        generated = rows(events, days, now)
        while True:
            chunk = [pair for _, pair in zip(range(CHUNK), generated, strict=False)]
            if not chunk:
                break
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO events (id, key, terminal, subject, badge, action, action_inferred,"
                " event_time, local_day, time_given, received_at, status, topic)"
                " VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, 1, ?, 'accepted', ?)",
                [event for event, _ in chunk],
            )
            db.executemany(
                "INSERT INTO deliveries (event_id, sink, person, event_time, state, outcome,"
                " attempts, next_attempt_at, created_at, settled_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [delivery for _, delivery in chunk],
            )
            db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - started


def size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


async def timed(call: Callable[[], Any], repeat: int = 20) -> float:
    """Median milliseconds of `repeat` awaited calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def old_status_ms(path: Path, repeat: int = 3) -> float:
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            for sql in OLD_STATUS:
                db.execute(sql).fetchall()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def scrape(store: Store, metrics: Metrics) -> bytes:
    """What a /metrics request does (bridge.ops.web.metrics): status, then the exposition."""
    metrics.set_queue(await store.status(now=time.time()))
    return metrics.render()


async def measure(args: argparse.Namespace, folder: Path) -> None:
    path, archive = folder / "bridge.db", folder / "archive"
    now = time.time()
    async with Store.open(path, site_tz=SITE):
        pass  # created and migrated as the daemon does
    fill_seconds = fill(path, events=args.events, days=args.days, now=now)
    before = size(path)
    old_before = old_status_ms(path)
    policy = RetentionPolicy(
        retain_days=args.keep, dedupe_days=60, rejected_retain_days=30, archive_dir=archive
    )
    async with Store.open(path, site_tz=SITE) as store:
        status_before = await timed(lambda: store.status(now=time.time()))
        counted = await store.status(now=time.time())
        started = time.perf_counter()
        report = await store.prune(policy, now=now)
        prune_seconds = time.perf_counter() - started
        after = size(path)
        status_after = await timed(lambda: store.status(now=time.time()))
        metrics = Metrics()
        scrape_after = await timed(lambda: scrape(store, metrics))
        remaining = await store.status(now=time.time())
        # the first event was pruned: its key comes back as a duplicate
        again = ClockEvent(
            key="door-0-0",
            terminal="door-1",
            badge="B1",
            user=None,
            action=Action.IN,
            time=datetime.fromtimestamp(now - args.days * DAY, UTC),
            time_given=True,
        )
        [stored] = await store.ingest(
            [Incoming(again, "clockin/door/events")],
            resolve=lambda _event: {SINK: "p-1"},
            received_at=datetime.now(UTC),
        )
    old_after = old_status_ms(path)
    archived = sum(file.stat().st_size for file in archive.iterdir())
    dead_before = counted["sinks"][SINK]["states"].get("dead", 0)
    dead_after = remaining["sinks"][SINK]["states"].get("dead", 0)
    mib = 1024 * 1024
    print(f"events {args.events:,} over {args.days:g} days, pruned to {args.keep:g} days")
    print(f"fill (bulk sqlite3)          {fill_seconds:8.1f} s")
    print(f"database before              {before / mib:8.1f} MiB")
    print(f"status() before (counters)   {status_before:8.2f} ms  (median of 20)")
    print(f"old status scans before      {old_before:8.1f} ms")
    print(
        f"pruning round                {prune_seconds:8.1f} s   {report.events:,} events,"
        f" {report.archive_files} archive files ({archived / mib:.1f} MiB),"
        f" {report.pages_freed:,} pages freed"
    )
    print(f"database after               {after / mib:8.1f} MiB  ({after / before:.0%})")
    print(f"status() after (counters)    {status_after:8.2f} ms")
    print(f"/metrics scrape after        {scrape_after:8.2f} ms  (status + render)")
    print(f"old status scans after       {old_after:8.1f} ms")
    print(f"old dead deliveries kept     {dead_after} of {dead_before}")
    print(f"resend of a pruned key       {stored.status}")
    assert stored.status is EventStatus.REDELIVERED
    assert dead_after == dead_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=400.0)
    parser.add_argument("--keep", type=float, default=365.0)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp one)")
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(measure(args, args.dir))
        return
    with tempfile.TemporaryDirectory(prefix="retention-bench-") as folder:
        asyncio.run(measure(args, Path(folder)))


if __name__ == "__main__":
    main()
