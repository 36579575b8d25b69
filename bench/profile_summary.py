"""Summarise a py-spy raw (collapsed stacks) profile: where the CPU samples went.

    PYTHONPATH=. python bench/profile_summary.py PROFILE.txt [--top 25]

Prints the share of samples per thread root, the functions with the most samples on top of the
stack (self), and the project/library functions with the most samples anywhere in the stack
(inclusive). py-spy counts only samples where a thread was running (not idle), so the total is
CPU time of the bridge process.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")


def _name(frame: str, *, with_line: bool = False) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match["file"]
    for marker in ("site-packages/", "python3.11/", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    line = f":{match['line']}" if with_line and match["line"] else ""
    return f"{match['func']} ({file}{line})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    self_counts: Counter[str] = Counter()
    self_lines: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    roots: Counter[str] = Counter()
    total = 0
    for raw in args.profile.read_text().splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        roots[
            "aiosqlite thread"
            if any("aiosqlite" in f and "run" in f for f in frames[:3])
            else "threading"
            if "_bootstrap" in frames[0]
            else "main (event loop)"
        ] += count
        self_counts[_name(frames[-1])] += count
        self_lines[_name(frames[-1], with_line=True)] += count
        for name in {_name(f) for f in frames}:
            inclusive[name] += count
    print(f"{total} samples")
    print("\nby thread:")
    for name, count in roots.most_common():
        print(f"  {count / total:6.1%}  {name}")
    print(f"\ntop {args.top} self (on top of the stack):")
    for name, count in self_counts.most_common(args.top):
        print(f"  {count / total:6.1%}  {name}")
    print(f"\ntop {args.top} inclusive (bridge/ and libraries, not asyncio/runpy plumbing):")
    skip = ("runpy", "asyncio/", "threading.py", "<module>", "cli.py", "bridge/__main__")
    shown = 0
    for name, count in inclusive.most_common():
        if any(s in name for s in skip):
            continue
        print(f"  {count / total:6.1%}  {name}")
        shown += 1
        if shown >= args.top:
            break


if __name__ == "__main__":
    main()
