"""`clockin-bridge status`: deliveries per sink and state, events, rejected and retried counts."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from bridge.commands.common import EXIT_OK, opened_store, settings_of
from bridge.commands.table import format_table
from bridge.store import QueueStatus, StoreRole

STATES = ("pending", "inflight", "unmapped", "held", "delivered", "dead", "dropped")


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    status = commands.add_parser("status", parents=[common], help="queue depth per sink and state")
    status.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    status = asyncio.run(_status(args))
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        _print_status_table(status)
    return EXIT_OK


async def _status(args: argparse.Namespace) -> QueueStatus:
    async with opened_store(settings_of(args), role=StoreRole.READ_ONLY) as store:
        return await store.status(now=time.time())


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _print_status_table(status: QueueStatus) -> None:
    rows = [
        [name, *(entry["states"].get(s, 0) for s in STATES), _age(entry["oldest_pending_seconds"])]
        for name, entry in sorted(status["sinks"].items())
    ]
    print(format_table(["sink", *STATES, "oldest"], rows))
    events = status["events"]
    print()
    print("events: " + (", ".join(f"{k} {v}" for k, v in sorted(events.items())) or "none"))
    rejected = f"rejected payloads: {status['rejected']}"
    if status["rejected_pruned"]:
        rejected += f", {status['rejected_pruned']} older ones pruned (store.rejected_max_mb)"
    print(rejected)
    print(f"deliveries retried: {status['retried']}")
