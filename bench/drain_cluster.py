"""Benchmark: a queued backlog drained by 1, 2 and 3 bridges on PostgreSQL, against 1 bridge on
SQLite, in one run (issue 16).

N events (default 100,000) for 2,000 people are queued through each store's own ingest (no MQTT:
only the drain is measured). On PostgreSQL the backlog is built once and each run gets a copy
(CREATE DATABASE ... TEMPLATE). Each bridge sends to the fake Go2Clock answering after 20 ms with
concurrency 16; drain rate = events / (last request - first request). The reference is one
bridge on SQLite with the same backlog and fake.

    PYTHONPATH=. python bench/drain_cluster.py [--count N] [--instances 1,2,3]

Needs the PostgreSQL server the machines run (127.0.0.1:5432, trust auth; CLOCKIN_BENCH_POSTGRES
points elsewhere); creates and drops its own databases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import yaml

from bench import common

SERVER = os.environ.get("CLOCKIN_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
LATENCY = 0.020
CONCURRENCY = 16
PEOPLE = 2000


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(SERVER, autocommit=True)


def _url(name: str) -> str:
    return SERVER.rsplit("/", 1)[0] + f"/{name}"


@contextlib.contextmanager
def database(template: str | None = None) -> Iterator[str]:
    name = f"clockin_bench_{uuid.uuid4().hex[:10]}"
    with _admin() as admin:
        suffix = f' TEMPLATE "{template}"' if template else ""
        admin.execute(f'CREATE DATABASE "{name}"{suffix}')
    try:
        yield name
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def build_postgres_backlog(name: str, directory: Path, count: int) -> float:
    """The same events as common.build_backlog_via_store, through PostgresStore.ingest."""
    from bridge.directory.file import DirectoryFile
    from bridge.directory.people import make_resolver
    from bridge.events import PayloadFormat
    from bridge.routing import parse_event
    from bridge.store import Incoming
    from bridge.store.postgres import PostgresStore

    common.write_directory(directory / "directory.csv", PEOPLE)
    resolve = make_resolver({"go2clock": "userid"}, DirectoryFile(directory / "directory.csv"))
    utc = ZoneInfo("UTC")
    base = datetime.now(UTC) - timedelta(seconds=count)
    began = time.monotonic()
    async with PostgresStore.open(_url(name), site_tz=utc, instance="builder") as store:
        for first in range(0, count, 2000):
            now = datetime.now(UTC)
            items = []
            for n in range(first, min(count, first + 2000)):
                topic = f"clockin/gate{n % 4}/events"
                body = json.dumps(
                    {
                        "id": f"bench-{n}",
                        "badge": f"B{n % PEOPLE:05d}",
                        "action": "in" if (n // PEOPLE) % 2 == 0 else "out",
                        "time": (base + timedelta(seconds=n)).isoformat(),
                    }
                ).encode()
                event = parse_event(
                    topic,
                    body,
                    PayloadFormat.CANONICAL,
                    pattern="clockin/+/events",
                    site_tz=utc,
                    received_at=now,
                )
                assert event is not None
                items.append(Incoming(event, topic))
            await store.ingest(items, resolve=resolve, received_at=now)
    return time.monotonic() - began


def _postgres_config(config: Path, name: str, number: int) -> None:
    data = yaml.safe_load(config.read_text())
    data["store"]["url"] = _url(name)
    data["store"]["instance_id"] = f"bench-{number}"
    data["mqtt"]["client_id"] = f"bench-bridge-{number}"
    config.write_text(yaml.safe_dump(data))


async def drain(
    work: Path, count: int, *, instances: int, database_name: str | None, broker_port: int
) -> dict[str, float]:
    """Start `instances` bridges on the backlog; the drain rate when the fake has all."""
    async with common.fake_go2clock(delay=LATENCY) as (fake, url):
        bridges = []
        for number in range(instances):
            home = work / f"bridge-{number}"
            home.mkdir(exist_ok=True)
            if database_name is None:  # SQLite: the backlog's file
                (home / "bridge.db").symlink_to(work / "bridge.db")
            config, port = common.write_config(
                home,
                broker_port=broker_port,
                people=PEOPLE,
                go2clock_url=url,
                concurrency=CONCURRENCY,
                client_id=f"bench-bridge-{number}",
            )
            if database_name is not None:
                _postgres_config(config, database_name, number)
            bridges.append(common.BridgeProcess(config, port))
        with contextlib.ExitStack() as stack:
            for bridge in bridges:
                bridge.start()
                stack.callback(bridge.stop)
            began = time.monotonic()
            while fake.created_count < count and time.monotonic() - began < 1800:
                await asyncio.sleep(0.2)
                for bridge in bridges:
                    if bridge.process and bridge.process.poll() is not None:
                        msg = f"bridge exited: {bridge.tail()}"
                        raise SystemExit(msg)
    times = [r["received_at"] for r in fake.requests]
    span = max(times) - min(times)
    doubles = sum(1 for c in fake.punches_by_key().values() if c > 1)
    return {
        "created": fake.created_count,
        "seconds": round(span, 1),
        "rate": round((len(times) - 1) / span),
        "stored_twice": doubles,
    }


async def run(args: argparse.Namespace) -> None:
    common.header("drain_cluster: 1-3 bridges on PostgreSQL against 1 bridge on SQLite")
    n = args.count
    results: dict[str, dict[str, float]] = {}
    work = common.workdir("drain-cluster-sqlite")
    built = await common.build_backlog_via_store(
        work, n, people=PEOPLE, sinks={"go2clock": "userid"}
    )
    print(f"  SQLite: {n} events queued through Store.ingest in {built:.1f} s")
    with common.broker(work) as broker:
        results["sqlite x1"] = await drain(
            work, n, instances=1, database_name=None, broker_port=broker.port
        )
    print(f"  SQLite, 1 bridge: {results['sqlite x1']}")
    with database() as template:
        work = common.workdir("drain-cluster-postgres")
        built = await build_postgres_backlog(template, work, n)
        print(f"  PostgreSQL: {n} events queued through PostgresStore.ingest in {built:.1f} s")
        for count in args.instances:
            run_dir = common.workdir(f"drain-cluster-postgres-{count}")
            with database(template) as name, common.broker(run_dir) as broker:
                results[f"postgres x{count}"] = await drain(
                    run_dir, n, instances=count, database_name=name, broker_port=broker.port
                )
            print(f"  PostgreSQL, {count} bridge(s): {results[f'postgres x{count}']}")
    reference = results["sqlite x1"]["rate"]
    for name, figures in results.items():
        ratio = figures["rate"] / reference
        print(f"  {name}: {figures['rate']:.0f}/s = {ratio:.2f} x SQLite's one bridge")
        common.result(
            "drain_cluster", run=name, events=n, ratio_to_sqlite=round(ratio, 2), **figures
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument(
        "--instances", type=lambda text: [int(x) for x in text.split(",")], default=[1, 2, 3]
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
