"""Start-up with years of history: process start to ready, against the start it replaced.

A database of N delivered events (two sinks: two deliveries each, as a 2,000-person site with
Go2Clock and McTime has) is built once with bench/retention.py's generator and kept in a cache
folder. For each size the bridge is started as a subprocess (`python -m bridge run`, its own
mosquitto) and timed from process start to /readyz ready (database open, broker connected), with
the page cache warm and cold, after a clean stop (the whole-file check then waits a day) and
after a SIGKILL (the check then runs at once, in the background, while the bridge serves).
References, on the same file in the same run: the release before this change started the same
way (`--reference`, default: the `main` branch, exported with `git archive` to a temp folder),
and `PRAGMA quick_check` over the whole file alone.

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
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import BridgeProcess, broker, machine_info, result, write_config  # noqa: E402
from bench.retention import CHUNK, rows  # noqa: E402
from bridge.store import Store  # noqa: E402
from bridge.store.integrity import read_marker  # noqa: E402

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


class TreeBridge(BridgeProcess):
    """The bridge of the source tree `tree` (this checkout, or the reference release)."""

    def __init__(self, config: Path, http_port: int, tree: Path) -> None:
        super().__init__(config, http_port)
        self.tree = tree

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(self.tree), "PYTHONDONTWRITEBYTECODE": "1"}
        self.started_at = time.monotonic()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run", "--config", str(self.config)],
                cwd=self.config.parent,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )


SINKS_YAML = """sinks:
  go2clock: {enabled: true, base_url: 'http://127.0.0.1:1', api_key: bench-key}
  mctime: {enabled: true, base_url: 'http://127.0.0.1:1', api_key: bench-key}"""


def bench_config(folder: Path, broker_port: int) -> tuple[Path, int]:
    """Two sinks at unreachable addresses: only the start is timed, nothing is due."""
    config, http_port = write_config(folder, broker_port=broker_port, people=2000)
    config.write_text(config.read_text().replace("sinks: {}", SINKS_YAML))
    return config, http_port


def start_ready(config: Path, http_port: int, tree: Path, *, kill: bool = False) -> float:
    """Seconds from process start to ready; then a clean stop (SIGTERM), or a SIGKILL."""
    bridge = TreeBridge(config, http_port, tree)
    bridge.start()
    try:
        return asyncio.run(bridge.wait_ready(timeout=600))
    finally:
        if kill and bridge.process is not None:
            bridge.process.send_signal(signal.SIGKILL)
            bridge.process.wait()
        bridge.stop()


def checked_once(config: Path, http_port: int, path: Path) -> float:
    """Start this tree's bridge and wait until its whole-file check has passed: the marker then
    says when, and clean stops after it wait a day for the next one. Its duration."""
    bridge = TreeBridge(config, http_port, ROOT)
    bridge.start()
    try:
        started = time.monotonic()
        while read_marker(path).checked_at is None:
            assert bridge.process is not None
            if bridge.process.poll() is not None:
                msg = f"bridge exited: {bridge.tail()}"
                raise RuntimeError(msg)
            time.sleep(0.2)
        return time.monotonic() - started
    finally:
        bridge.stop()


def prepare(path: Path, cache_state: str) -> str:
    if cache_state == "cold":
        return drop_cache(path)
    warm_cache(path)
    return "read whole file"


def measure(size: int, cache: Path, repeat: int, reference: Path) -> None:
    folder = cache / f"startup-{size}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bridge.db"
    built = build(path, size)
    mib = sum(f.stat().st_size for f in database_files(path)) / (1024 * 1024)
    print(f"\n{size:,} events ({mib:,.0f} MiB{f', built in {built:.0f} s' if built else ''})")
    with broker(folder) as mqtt:
        config, http_port = bench_config(folder, mqtt.port)
        first = checked_once(config, http_port, path)  # also creates the broker session
        print(f"  first start's background whole-file check: {first:.1f} s (from start)")
        for cache_state in ("warm", "cold"):
            new, old, unclean, checks = [], [], [], []
            for _ in range(repeat):
                how = prepare(path, cache_state)
                new.append(start_ready(config, http_port, ROOT))
                prepare(path, cache_state)
                old.append(start_ready(config, http_port, reference))
                prepare(path, cache_state)
                checks.append(quick_check_seconds(path)[0])
                start_ready(config, http_port, ROOT, kill=True)  # an unclean stop
                prepare(path, cache_state)
                unclean.append(start_ready(config, http_port, ROOT))
                checked_once(config, http_port, path)  # clean and checked for the next round
            report(size, mib, cache_state, how, new=new, old=old, unclean=unclean, checks=checks)


def report(
    size: int,
    mib: float,
    cache_state: str,
    how: str,
    *,
    new: list[float],
    old: list[float],
    unclean: list[float],
    checks: list[float],
) -> None:
    ready, before = statistics.median(new), statistics.median(old)
    after_kill, check = statistics.median(unclean), statistics.median(checks)
    met = max(ready, after_kill) <= TARGET_READY_S
    print(
        f"  {cache_state:4} ({how}): ready in {ready:6.2f} s after a clean stop,"
        f" {after_kill:6.2f} s after a SIGKILL (check running);"
        f" before this change {before:6.2f} s ({before / ready:5.1f}x);"
        f" quick_check alone {check:6.2f} s;"
        f" target {TARGET_READY_S:.0f} s {'met' if met else 'MISSED'}"
    )
    result(
        "startup",
        events=size,
        cache=cache_state,
        evicted_by=how,
        database_mib=round(mib),
        ready_s=round(ready, 2),
        ready_runs=[round(s, 2) for s in new],
        ready_after_kill_s=round(after_kill, 2),
        reference_ready_s=round(before, 2),
        reference_runs=[round(s, 2) for s in old],
        quick_check_s=round(check, 2),
    )


def export_reference(revision: str, folder: Path) -> Path:
    """The reference release's source tree, exported from git (no checkout is touched)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "bridge"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="0,1000000,5000000", help="events, comma-separated")
    parser.add_argument("--cache", type=Path, default=Path("/work/.cache/startup-bench"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--reference", default="main", help="git revision of the reference")
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
    with tempfile.TemporaryDirectory(prefix="startup-reference-") as tree:
        reference = export_reference(args.reference, Path(tree))
        for size in sizes:
            measure(size, args.cache, args.repeat, reference)


if __name__ == "__main__":
    main()
