"""Benchmark 4: footprint with a backlog: peak RSS, start-up time, idle CPU.

For each backlog size (default 10,000, 100,000 and 1,000,000 queued events, 2,000 people) the
database is built directly in SQLite with a bulk executemany that writes row for row what
Store.ingest writes (bench/common.py build_backlog_bulk; Store.ingest itself would take many
minutes for 1,000,000). Then the bridge starts against a zero-latency fake Go2Clock
(concurrency 4) and works on the backlog for --window seconds:
- start-up: process start to ready (database open, migrations, recovery, broker connected);
- RSS: peak (VmHWM) and current of the bridge process at the end of the window, against the
  RSS of the same bridge on an empty database (the reference, same run);
- deliveries made in the window (how claiming scales with the backlog).
Idle CPU: on the smallest backlog, once every event is delivered, CPU seconds (utime + stime)
of the bridge over --idle seconds with nothing arriving and nothing due.

    PYTHONPATH=. python bench/footprint.py [--quick] [--sizes 10000,100000,1000000]
        [--window 30] [--idle 60]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench import common

TARGET_RSS_MIB = 80.0
TARGET_START_S = 2.0
TARGET_IDLE_CPU = 0.01


async def one(size: int, args: argparse.Namespace, *, idle: bool) -> dict[str, object]:
    work = common.workdir(f"footprint-{size}")
    built = 0.0
    if size:
        built = await asyncio.to_thread(common.build_backlog_bulk, work, size, people=2000)
    db_mib = sum(p.stat().st_size for p in work.glob("bridge.db*")) / 2**20
    with common.broker(work) as broker:
        async with common.fake_go2clock() as (fake, url):
            config, http_port = common.write_config(
                work, broker_port=broker.port, people=2000, go2clock_url=url
            )
            with common.running_bridge(config, http_port) as bridge:
                ready = await bridge.wait_ready(timeout=120)
                await asyncio.sleep(args.window)
                rss, peak = bridge.rss_mib()
                made = fake.created_count
                idle_cpu = None
                if idle:
                    deadline = time.monotonic() + 600
                    while fake.created_count < size and time.monotonic() < deadline:
                        await asyncio.sleep(0.5)
                    await asyncio.sleep(6)  # the last settles, one recheck period
                    before, t0 = bridge.cpu_seconds(), time.monotonic()
                    await asyncio.sleep(args.idle)
                    idle_cpu = (bridge.cpu_seconds() - before) / (time.monotonic() - t0)
                    rss, peak = bridge.rss_mib()
    figures = {
        "backlog": size,
        "db_mib": round(db_mib, 1),
        "build_s": round(built, 1),
        "ready_s": round(ready, 2),
        "rss_mib": round(rss, 1),
        "peak_rss_mib": round(peak, 1),
        "delivered_in_window": made,
        "window_s": args.window,
        "idle_cpu": None if idle_cpu is None else round(idle_cpu, 5),
    }
    print(
        f"  backlog {size:>9}: db {db_mib:.0f} MiB (built in {built:.0f} s); ready in "
        f"{ready:.2f} s; RSS {rss:.0f} MiB, peak {peak:.0f} MiB; {made} delivered in "
        f"{args.window:g} s ({made / args.window:.0f}/s)"
        + (f"; idle CPU {idle_cpu:.3%} over {args.idle:g} s" if idle_cpu is not None else "")
    )
    return figures


async def run(args: argparse.Namespace) -> None:
    common.header("footprint: RSS, start-up and idle CPU with a backlog")
    reference = await one(0, args, idle=False)
    common.result("footprint", **reference)
    rows = []
    for index, size in enumerate(args.sizes):
        figures = await one(size, args, idle=index == 0)
        figures["peak_rss_ratio_to_empty"] = round(
            float(figures["peak_rss_mib"]) / float(reference["peak_rss_mib"]), 2
        )
        common.result("footprint", **figures)
        rows.append(figures)
    biggest = rows[-1]
    idle_cpu = rows[0]["idle_cpu"]
    rss_met = float(biggest["peak_rss_mib"]) <= TARGET_RSS_MIB
    start_met = float(biggest["ready_s"]) <= TARGET_START_S
    idle_met = idle_cpu is not None and float(idle_cpu) <= TARGET_IDLE_CPU
    print(
        f"  targets: peak RSS <= {TARGET_RSS_MIB:g} MiB at {biggest['backlog']}: "
        f"{'met' if rss_met else 'NOT met'}; start-up <= {TARGET_START_S:g} s: "
        f"{'met' if start_met else 'NOT met'}; idle CPU <= 1%: {'met' if idle_met else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000; 5 s windows")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        args.sizes, args.window, args.idle = [1000, 10_000], 5.0, 10.0
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
