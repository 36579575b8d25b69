"""The reference of bench/io_per_event.py: a bare SQLite insert loop, WAL, synchronous=FULL,
one ~300-byte row and one commit per event, paced at --rate events/s (what any durable store of
one row per event costs at least). Run as its own process (under strace by the bench); prints
one JSON line: events, seconds, write_bytes and CPU seconds of this process over the loop,
and the loop's start and end (epoch) to pick its fsyncs out of strace's log.

    python bench/bare_insert.py --db PATH --count N --rate R
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def io_write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    args = parser.parse_args()
    with contextlib.closing(sqlite3.connect(args.db, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, body TEXT)")
        body = "x" * 300
        began_at = time.time()
        began, written, cpu = time.monotonic(), io_write_bytes(), cpu_seconds()
        for n in range(args.count):
            pause = began + n / args.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO events (body) VALUES (?)", (body,))
            db.execute("COMMIT")
        figures = {
            "events": args.count,
            "seconds": time.monotonic() - began,
            "write_bytes": io_write_bytes() - written,
            "cpu_seconds": cpu_seconds() - cpu,
            "began_at": began_at,
            "ended_at": time.time(),
        }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
