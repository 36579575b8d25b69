"""Benchmark 8: disk flushes, bytes written and CPU per event, through the real bridge.

The bridge runs under `strace -f --seccomp-bpf -ttt -y -e trace=fsync,fdatasync` (only those
two calls stop the process, so the rest runs at full speed) against a real mosquitto and a
zero-latency fake Go2Clock (concurrency 4). For each rate (10, 100 and 1,000 events/s) a paho
publisher (its own process) sends COUNT QoS 1 events, each a new person's swipe, and the window
closes once every one is delivered and settled. Per event over the window:
- flushes: fsync + fdatasync calls of the bridge, from strace's log, and how many of them
  were of the database's files;
- bytes: write_bytes of the bridge's process (/proc/PID/io: what it sent to the disk,
  counted when a page is first dirtied: the WAL frames and the checkpoints' page copies);
- CPU: utime + stime of the bridge's process.
References, same run and rates:
- for flushes and bytes: bench/bare_insert.py, a bare SQLite loop (WAL, synchronous=FULL) that
  inserts one ~300-byte row and commits once per event, under the same strace;
- for CPU: bench/stack_floor.py, the bridge's libraries with nothing of the bridge between
  them: aiomqtt receives, aiohttp sends one PUT per message (`put`), and, in `naive`, also an
  aiosqlite insert + commit and a QoS 1 feedback message per message, one message at a time.

    PYTHONPATH=. python bench/io_per_event.py [--quick] [--rates 10,100,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench import common

COUNTS = {10: 300, 100: 1500, 1000: 5000}  # 30 s, 15 s and 5 s of traffic
QUICK_COUNTS = {10: 100, 100: 500, 1000: 2000}
PEOPLE = 10_000  # more than all events together: no badge swipes twice (no double swipe)
TARGET_FLUSHES = 1.2
TARGET_KIB = 16.0
TARGET_CPU_MS = 1.0


def strace_wrapper(log: Path) -> tuple[str, ...]:
    strace = shutil.which("strace")
    if strace is None:
        msg = "strace is needed (apt-get install strace)"
        raise SystemExit(msg)
    trace = ("-f", "--seccomp-bpf", "-ttt", "-y", "-e", "trace=fsync,fdatasync")
    return (strace, *trace, "-o", str(log), "--")


def flushes(log: Path, began: float, ended: float) -> tuple[int, int]:
    """(all fsync/fdatasync calls, those of bridge.db*) between two epoch times."""
    total = database = 0
    for line in log.read_text(errors="replace").splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) < 3 or not parts[2].startswith(("fsync(", "fdatasync(")):
            continue  # a resumed call's second line, or strace's own notes
        if began <= float(parts[1]) <= ended:
            total += 1
            database += ".db" in parts[2]
    return total, database


def reference(work: Path, rate: int, count: int) -> dict[str, float]:
    log = work / f"bare-{rate}.strace"
    out = subprocess.run(
        [
            *strace_wrapper(log),
            common.PY,
            str(common.ROOT / "bench" / "bare_insert.py"),
            "--db",
            str(work / f"bare-{rate}.db"),
            "--count",
            str(count),
            "--rate",
            str(rate),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    total, _ = flushes(log, figures["began_at"], figures["ended_at"])
    return per_event(count, total, total, figures["write_bytes"], figures["cpu_seconds"])


FLOOR_MODES = ("put", "naive")
FLOOR_START = 1_000_000  # its swipes' ids are not the bridge's


async def stack_floor(
    *, work: Path, broker_port: int, url: str, mode: str, rate: int, count: int, start: int
) -> float:
    """CPU ms per event of bench/stack_floor.py carrying `count` swipes at `rate`."""
    process = await asyncio.create_subprocess_exec(
        common.PY,
        str(common.ROOT / "bench" / "stack_floor.py"),
        *("--port", str(broker_port), "--url", url, "--mode", mode, "--count", str(count)),
        *("--db", str(work / f"floor-{mode}-{rate}.db")),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "GO2CLOCK_API_KEY": common.API_KEY},
    )
    assert process.stdout is not None
    try:
        if await asyncio.wait_for(process.stdout.readline(), 30) != b"READY\n":
            raise SystemExit("bench/stack_floor.py did not start")
        await asyncio.sleep(2)  # its start-up is done
        cpu = common.process_cpu_seconds(process.pid)
        await common.publish_async(
            broker_port, count, rate=rate, people=PEOPLE, start=start, time_mode="spaced"
        )
        if await asyncio.wait_for(process.stdout.readline(), 120) != b"DONE\n":
            raise SystemExit("bench/stack_floor.py stopped before the last swipe")
        return (common.process_cpu_seconds(process.pid) - cpu) / count * 1000
    finally:
        process.terminate()
        await process.wait()


def per_event(events: int, total: int, database: int, written: int, cpu: float) -> dict[str, float]:
    return {
        "events": events,
        "flushes": round(total / events, 3),
        "db_flushes": round(database / events, 3),
        "kib": round(written / events / 1024, 2),
        "cpu_ms": round(cpu / events * 1000, 3),
    }


async def through_bridge(
    *,
    bridge: common.BridgeProcess,
    fake: common.FastFakeGo2Clock,
    broker_port: int,
    trace: Path,
    rate: int,
    count: int,
    start: int,
) -> dict[str, float]:
    db = bridge.config.parent / "bridge.db"
    before = fake.created_count
    began, written, cpu = time.time(), bridge.write_bytes(), bridge.cpu_seconds()
    await common.publish_async(
        broker_port, count, rate=rate, people=PEOPLE, start=start, time_mode="spaced"
    )
    deadline = time.monotonic() + 120
    open_sql = "SELECT count(*) FROM deliveries WHERE state IN ('pending', 'inflight')"
    while time.monotonic() < deadline:
        if fake.created_count - before >= count and common.db_count(db, open_sql) == 0:
            break
        await asyncio.sleep(0.05)
    else:
        msg = f"not delivered in time: {fake.created_count - before} of {count}"
        raise SystemExit(msg)
    ended, written, cpu = time.time(), bridge.write_bytes() - written, bridge.cpu_seconds() - cpu
    total, database = flushes(trace, began, ended)
    figures = per_event(count, total, database, written, cpu)
    figures["seconds"] = round(ended - began, 1)
    return figures


async def run(args: argparse.Namespace) -> None:
    common.header("io per event: fdatasync, bytes written and CPU per event")
    work = common.workdir("io-per-event")
    counts = QUICK_COUNTS if args.quick else COUNTS
    references = {rate: reference(work, rate, counts[rate]) for rate in args.rates}
    trace = work / "bridge.strace"
    rows = []
    floors: dict[tuple[str, int], float] = {}
    with common.broker(work) as broker:
        async with common.fake_go2clock() as (fake, url):
            floor_start = FLOOR_START
            for rate in args.rates:
                for mode in FLOOR_MODES:
                    floors[mode, rate] = await stack_floor(
                        work=work,
                        broker_port=broker.port,
                        url=url,
                        mode=mode,
                        rate=rate,
                        count=counts[rate],
                        start=floor_start,
                    )
                    floor_start += counts[rate]
            config, http_port = common.write_config(
                work, broker_port=broker.port, people=PEOPLE, go2clock_url=url
            )
            bridge = common.BridgeProcess(config, http_port, wrapper=strace_wrapper(trace))
            bridge.start()
            try:
                await bridge.wait_ready(timeout=60)
                await asyncio.sleep(2)  # start-up writes (migrations, directory) are done
                start = 0
                for rate in args.rates:
                    figures = await through_bridge(
                        bridge=bridge,
                        fake=fake,
                        broker_port=broker.port,
                        trace=trace,
                        rate=rate,
                        count=counts[rate],
                        start=start,
                    )
                    start += counts[rate]
                    rows.append((rate, figures, references[rate]))
            finally:
                bridge.stop()
    for rate, bridge_figures, bare in rows:
        print(
            f"  {rate:>5}/s, {bridge_figures['events']} events: bridge "
            f"{bridge_figures['flushes']:.2f} flushes ({bridge_figures['db_flushes']:.2f} of "
            f"the database), {bridge_figures['kib']:.1f} KiB, {bridge_figures['cpu_ms']:.2f} ms "
            f"CPU per event; bare insert loop {bare['flushes']:.2f} flushes, "
            f"{bare['kib']:.1f} KiB, {bare['cpu_ms']:.2f} ms; ratio "
            f"{bridge_figures['flushes'] / bare['flushes']:.2f}x flushes, "
            f"{bridge_figures['kib'] / bare['kib']:.2f}x bytes"
        )
        put, naive = floors["put", rate], floors["naive", rate]
        print(
            f"         CPU ms per event: bridge {bridge_figures['cpu_ms']:.2f}; stack floor "
            f"{put:.2f} (receive + PUT), {naive:.2f} (receive + store + feedback + PUT); "
            f"bridge / floor {bridge_figures['cpu_ms'] / put:.2f}x, "
            f"{bridge_figures['cpu_ms'] / naive:.2f}x"
        )
        common.result(
            "io_per_event",
            rate=rate,
            bridge=bridge_figures,
            bare_insert=bare,
            flush_ratio=round(bridge_figures["flushes"] / bare["flushes"], 2),
            bytes_ratio=round(bridge_figures["kib"] / bare["kib"], 2),
            floor_cpu_ms={mode: round(floors[mode, rate], 3) for mode in FLOOR_MODES},
            cpu_ratio_to_put_floor=round(bridge_figures["cpu_ms"] / floors["put", rate], 2),
            cpu_ratio_to_naive_floor=round(bridge_figures["cpu_ms"] / floors["naive", rate], 2),
        )
    ten = next((figures for rate, figures, _ in rows if rate == 10), None)
    if ten is not None:
        met = (
            ten["flushes"] <= TARGET_FLUSHES,
            ten["kib"] <= TARGET_KIB,
            ten["cpu_ms"] <= TARGET_CPU_MS,
        )
        verdict = ["met" if ok else "NOT met" for ok in met]
        print(
            f"  targets at 10/s: <= {TARGET_FLUSHES} flushes {verdict[0]}, <= {TARGET_KIB:g} KiB "
            f"{verdict[1]}, <= {TARGET_CPU_MS:g} ms CPU {verdict[2]}"
        )
    print(f"  work directory (strace logs, bridge.log): {work}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100, 500 and 2,000 events")
    parser.add_argument("--rates", default="10,100,1000")
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rates.split(",")]
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
