"""`clockin-bridge status [--watch [SECONDS]]`: is the daemon running and healthy (its
heartbeat and lock), the broker connection, each sink's state, and the queue per sink."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bridge.commands.common import EXIT_OK, opened_store, settings_of
from bridge.commands.table import format_table, printable
from bridge.config import Settings
from bridge.ops import heartbeat
from bridge.ops.web import describe
from bridge.store import StoreRole
from bridge.store.lock import holder
from bridge.store.postgres import PostgresStore

STATES = ("pending", "inflight", "unmapped", "held", "delivered", "dead", "dropped")
CLEAR_SCREEN = "\x1b[H\x1b[2J"


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    status = commands.add_parser(
        "status", parents=[common], help="is the daemon running; queue depth per sink and state"
    )
    status.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        metavar="SECONDS",
        help="show it again every SECONDS (default 2) until Ctrl-C",
    )
    status.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    while True:
        report = asyncio.run(_report(settings))
        if args.watch and sys.stdout.isatty():
            print(CLEAR_SCREEN, end="")
        daemon, queue = report
        if args.json:  # the queue's counts at the top, as before the daemon's state joined
            data = {**queue, "daemon": daemon}
            print(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True))
        else:
            _print(daemon, queue)
        if not args.watch:
            return EXIT_OK
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            time.sleep(args.watch)
            continue
        return EXIT_OK


async def _report(settings: Settings) -> tuple[heartbeat.DaemonState, dict[str, Any]]:
    path = settings.store.path
    daemon = heartbeat.daemon_state(
        heartbeat.read(heartbeat.heartbeat_path(path)), holder=holder(path), now=time.time()
    )
    async with opened_store(settings, role=StoreRole.READ_ONLY) as store:
        queue: dict[str, Any] = dict(await store.status(now=time.time()))
        if isinstance(store, PostgresStore):  # the bridges sharing it
            queue["instances"] = await store.instances()
    return daemon, queue


def _print(daemon: heartbeat.DaemonState, status: dict[str, Any]) -> None:
    print(printable(f"daemon: {daemon['state']} ({daemon['detail']})"))
    beat = daemon["heartbeat"]
    if beat is not None:
        mqtt = beat["mqtt"]
        if mqtt["connected"]:
            print("mqtt: connected")
        else:
            since = _when(mqtt["since"])
            print(printable(f"mqtt: disconnected since {since}: {mqtt['last_error'] or '-'}"))
        for name, state in sorted(beat["sinks"].items()):
            print(printable(f"sink {name}: {describe(state)}"))
    print()
    rows = [
        [name, *(entry["states"].get(s, 0) for s in STATES), _age(entry["oldest_pending_seconds"])]
        for name, entry in sorted(status["sinks"].items())
    ]
    print(format_table(["sink", *STATES, "oldest"], rows))
    events = status["events"]
    print()
    print("events: " + (", ".join(f"{k} {v}" for k, v in sorted(events.items())) or "none"))
    print(f"directions inferred (no action from the terminal): {status['inferred']}")
    rejected = f"rejected payloads: {status['rejected']}"
    if status["rejected_pruned"]:
        rejected += f", {status['rejected_pruned']} older ones pruned (store.rejected_max_mb)"
    print(rejected)
    print(f"deliveries retried: {status['retried']}")
    if "instances" in status:
        _print_instances(status["instances"])


def _print_instances(instances: list[dict[str, Any]]) -> None:
    """The bridges sharing the PostgreSQL store: last heartbeat, broker, claims held."""
    print()
    now = time.time()
    rows = [
        [
            row["id"],
            row["host"],
            _age(now - row["heartbeat_at"]) + " ago",
            "connected" if row["mqtt_connected"] else "-",
            row["claims"],
            "stopped" if row["stopped_at"] is not None else "",
        ]
        for row in instances
    ]
    headers = ["instance", "host", "last heartbeat", "broker", "claims", ""]
    print(format_table(headers, rows))


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
