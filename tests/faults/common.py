"""Shared by the fault-injection suite: a bridge as a real subprocess, and the checks every
fault test ends with (every event delivered exactly once, in per-person order)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections import defaultdict
from pathlib import Path

from tests.fakes.go2clock import FakeGo2Clock

# FAULTS_HEAVY=1 runs the long versions (e.g. 20,000 events); CI runs the short ones.
HEAVY = os.environ.get("FAULTS_HEAVY") == "1"


async def start_bridge(
    config: Path, log: Path | None, *, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """`python -m bridge run --config CONFIG` as a real process, its output appended to `log`
    (discarded when None), `env` added to this process's environment."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("ab")) if log is not None else asyncio.subprocess.DEVNULL
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "run",
            "--config",
            str(config),
            stdout=out,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )


def logged(log: Path, event: str, count: int = 1):
    async def predicate() -> bool:
        return log.read_text(errors="replace").count(f'"event": "{event}"') >= count

    return predicate


def assert_exactly_once_in_order(fake: FakeGo2Clock, expected: int) -> None:
    punches = fake.punches_by_key()
    assert len(punches) == expected, f"{expected - len(punches)} events never arrived"
    assert max(punches.values()) == 1, "an event was booked twice"
    per_person: dict[str, list[str]] = defaultdict(list)
    for record in fake.records:  # in the order the vendor stored them
        per_person[record["userid"]].append(record["checktime"])
    for person, times in per_person.items():
        assert times == sorted(times), f"person {person}'s punches arrived out of order"
