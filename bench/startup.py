"""Start-up with years of history: process start to ready, against the start it replaced.

A database of N delivered events (two sinks: two deliveries each, as a 2,000-person site with
Go2Clock and McTime has) is built once with bench/retention.py's generator and kept in a cache
folder. For each size the bridge is started as a subprocess (`python -m bridge run`, its own
mosquitto) and timed from process start to /readyz ready (database open, broker connected), with
the page cache warm and cold. The reference, measured on the same file in the same run, is what
every start used to run first: `PRAGMA quick_check` over the whole file.

    PYTHONPATH=. .venv/bin/python bench/startup.py                       # 0 / 1 M / 5 M events
    PYTHONPATH=. .venv/bin/python bench/startup.py --sizes 0,20000       # a quick run

Cold cache: `echo 1 > /proc/sys/vm/drop_caches` when this process may (root), else
posix_fadvise(POSIX_FADV_DONTNEED) on the database and its -wal; the output says which. On a
virtual machine the host may still cache the disk: the output's cold figures are this guest's.

Not a test: building 5 M events takes several minutes and ~3.5 GB under --cache.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import broker, machine_info, result, running_bridge, write_config  # noqa: E402
from bench.retention import CHUNK, rows  # noqa: E402
from bridge.store import Store  # noqa: E402

SITE = ZoneInfo("UTC")
DAYS = 912.0  # two and a half years
SINKS = ("go2clock", "mctime")
TARGET_READY_S = 2.0


def build(path: Path, events: int) -> float:
    """The database of `events` delivered events (one delivery per sink), made once: a file
    named `<path>.done` says a build finished."""
    done = path.with_name(path.name + ".done")
    if done.exists():
        return 0.0
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    started = time.perf_counter()
    asyncio.run(_create(path))
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA synchronous = OFF")
        generated = rows(events, DAYS, time.time()) if events else iter(())
        while chunk := [pair for _, pair in zip(range(CHUNK), generated, strict=False)]:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO events (id, key, terminal, subject, badge, action, action_inferred,"
                " event_time, local_day, time_given, received_at, status, topic)"
                " VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, 1, ?, 'accepted', ?)",
                [event for event, _ in chunk],
            )
            for sink in SINKS:
                db.executemany(
                    "INSERT INTO deliveries (event_id, sink, person, event_time, state, outcome,"
                    " attempts, next_attempt_at, created_at, settled_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(d[0], sink, *d[2:]) for _, d in chunk],
                )
            db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    done.touch()
    return time.perf_counter() - started


async def _create(path: Path) -> None:
    async with Store.open(path, site_tz=SITE):
        pass  # created and migrated as the daemon does


def database_files(path: Path) -> list[Path]:
    names = (path.name, path.name + "-wal")
    return [path.with_name(name) for name in names if path.with_name(name).exists()]


def drop_cache(path: Path) -> str:
    """Evict the database from the page cache; say how."""
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return "drop_caches"
    for file in database_files(path):
        fd = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return "fadvise"


def warm_cache(path: Path) -> None:
    for file in database_files(path):
        with file.open("rb") as data:
            while data.read(1 << 22):
                pass


def quick_check_seconds(path: Path) -> tuple[float, str]:
    """What every start ran before the bridge served: PRAGMA quick_check over the whole file."""
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        started = time.perf_counter()
        verdict = db.execute("PRAGMA quick_check").fetchall()
        return time.perf_counter() - started, str(verdict[0][0])


async def ready_seconds(folder: Path, port: int) -> float:
    config, http_port = write_config(folder, broker_port=port, people=2000)
    config.write_text(
        config.read_text().replace("sinks: {}", _SINKS_YAML)
    )  # unreachable vendors: only the start is timed
    with running_bridge(config, http_port) as bridge:
        return await bridge.wait_ready(timeout=300)


_SINKS_YAML = """sinks:
  go2clock: {enabled: true, base_url: 'http://127.0.0.1:1', api_key: bench-key}
  mctime: {enabled: true, base_url: 'http://127.0.0.1:1', api_key: bench-key}"""


def measure(size: int, cache: Path, repeat: int) -> None:
    folder = cache / f"startup-{size}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bridge.db"
    built = build(path, size)
    mib = sum(f.stat().st_size for f in database_files(path)) / (1024 * 1024)
    print(f"\n{size:,} events ({mib:,.0f} MiB{f', built in {built:.0f} s' if built else ''})")
    with broker(folder) as mqtt:
        asyncio.run(ready_seconds(folder, mqtt.port))  # the session exists; the file is migrated
        for cache_state in ("warm", "cold"):
            starts, checks, how = [], [], "read whole file"
            for _ in range(repeat):
                how = drop_cache(path) if cache_state == "cold" else (warm_cache(path) or how)
                starts.append(asyncio.run(ready_seconds(folder, mqtt.port)))
                how = drop_cache(path) if cache_state == "cold" else how
                seconds, verdict = quick_check_seconds(path)
                checks.append(seconds)
            ready, check = statistics.median(starts), statistics.median(checks)
            print(
                f"  {cache_state:4} ({how}): ready in {ready:6.2f} s;"
                f" quick_check alone {check:6.2f} s ({verdict});"
                f" old start >= {ready + check:6.2f} s, {(ready + check) / ready:5.1f}x;"
                f" target {TARGET_READY_S:.0f} s {'met' if ready <= TARGET_READY_S else 'MISSED'}"
            )
            result(
                "startup",
                events=size,
                cache=cache_state,
                evicted_by=how,
                database_mib=round(mib),
                ready_s=round(ready, 2),
                ready_runs=[round(s, 2) for s in starts],
                quick_check_s=round(check, 2),
                old_start_s=round(ready + check, 2),
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="0,1000000,5000000", help="events, comma-separated")
    parser.add_argument("--cache", type=Path, default=Path("/work/.cache/startup-bench"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    if args.build_only:
        for size in sizes:
            folder = args.cache / f"startup-{size}"
            folder.mkdir(parents=True, exist_ok=True)
            print(f"{size:,} built in {build(folder / 'bridge.db', size):.0f} s")
        return
    print(" ".join(f"{k}={v}" for k, v in machine_info().items()))
    print("command:", " ".join(sys.argv))
    for size in sizes:
        measure(size, args.cache, args.repeat)


if __name__ == "__main__":
    main()
