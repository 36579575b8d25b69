"""Command line: `clockin-bridge run|status|demo` and the operator commands (bridge.commands).
The only place logging is configured."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bridge import __version__
from bridge import commands as operator_commands
from bridge.commands import directory as directory_command
from bridge.commands import reconcile as reconcile_command
from bridge.commands.common import common_options
from bridge.commands.table import format_table
from bridge.config import ConfigError, Settings, load_settings
from bridge.directory import DirectoryError
from bridge.logs import configure_logging
from bridge.preflight import check_environment
from bridge.store import QueueStatus, Store, StoreError, StoreRole

EXIT_CONFIG = 2


def _default_config() -> Path:
    return Path(os.environ.get("CLOCKIN_CONFIG", "config.yaml"))


def _fail(message: str, code: int) -> int:
    print(f"clockin-bridge: {message}", file=sys.stderr)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    from bridge.app import Bridge  # imported here so `status` stays light

    settings = load_settings(args.config)
    check_environment(settings)  # ConfigError: port in use, state folder, TLS key: exit 2
    configure_logging(
        level=settings.log.level, fmt=settings.log.format, secrets=settings.secret_values()
    )
    try:
        asyncio.run(Bridge(settings, config_path=args.config).run())
    except DirectoryError as err:
        return _fail(f"config error: directory.path: {err}", EXIT_CONFIG)
    return 0


async def _status(settings: Settings) -> QueueStatus:
    async with Store.open(
        settings.store.path, site_tz=settings.site.tz, role=StoreRole.READ_ONLY
    ) as store:
        return await store.status(now=time.time())


def _age(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _print_status_table(status: QueueStatus) -> None:
    states = ("pending", "inflight", "unmapped", "held", "delivered", "dead", "dropped")
    rows = [
        [name, *(entry["states"].get(s, 0) for s in states), _age(entry["oldest_pending_seconds"])]
        for name, entry in sorted(status["sinks"].items())
    ]
    print(format_table(["sink", *states, "oldest"], rows))
    events = status["events"]
    print()
    print("events: " + (", ".join(f"{k} {v}" for k, v in sorted(events.items())) or "none"))
    rejected = f"rejected payloads: {status['rejected']}"
    if status["rejected_pruned"]:
        rejected += f", {status['rejected_pruned']} older ones pruned (store.rejected_max_mb)"
    print(rejected)
    print(f"deliveries retried: {status['retried']}")


def cmd_status(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    status = asyncio.run(_status(settings))
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        _print_status_table(status)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo

    return run_demo(speed=args.speed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clockin-bridge", description="Badge terminals on MQTT -> time-and-attendance clouds"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path, default=_default_config())
    run.set_defaults(handler=cmd_run)

    status = commands.add_parser("status", help="queue depth per sink and state")
    status.add_argument("--config", type=Path, default=_default_config())
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)

    demo = commands.add_parser("demo", help="everything in one process, no set-up")
    demo.add_argument("--speed", type=float, default=1.0, help="time compression factor")
    demo.set_defaults(handler=cmd_demo)

    operator_commands.register(commands)
    reconcile_command.register(commands, common_options())
    directory_command.register(commands, common_options())
    return parser


# Everything the bridge creates (the database and its -wal and -shm files, exports) holds
# names, badges and hours: readable by the bridge's own user only. Set here, in the one entry
# point the console script, `python -m bridge`, the Docker image and the systemd unit share.
PRIVATE_UMASK = 0o077


def main(argv: Sequence[str] | None = None) -> int:
    previous = os.umask(PRIVATE_UMASK)
    try:
        return _main(argv)
    finally:
        os.umask(previous)  # for a caller in the same process (tests); a real process ends here


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as err:
        return _fail(f"config error: {err}", EXIT_CONFIG)
    except StoreError as err:
        return _fail(f"database error: {err}", 1)
    except KeyboardInterrupt:
        return 130
