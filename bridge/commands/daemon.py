"""`clockin-bridge run` (the daemon) and `clockin-bridge demo` (everything in one process)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from bridge.commands.common import EXIT_CONFIG, default_config, fail
from bridge.config import load_settings
from bridge.directory.file import DirectoryError
from bridge.ops.logs import configure_logging
from bridge.ops.preflight import check_environment


def register(commands: Any, _common: argparse.ArgumentParser) -> None:
    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path, default=default_config())
    run.set_defaults(handler=cmd_run)

    demo = commands.add_parser("demo", help="everything in one process, no set-up")
    demo.add_argument("--speed", type=float, default=1.0, help="time compression factor")
    demo.set_defaults(handler=cmd_demo)


def cmd_run(args: argparse.Namespace) -> int:
    # The daemon's whole import graph (aiohttp, aiomqtt, every vendor), only for `run`: the
    # operator commands start without it.
    from bridge.app import Bridge  # noqa: PLC0415 - the daemon's import graph, only for `run`

    settings = load_settings(args.config)
    check_environment(settings)  # ConfigError: port in use, state folder, TLS key: exit 2
    configure_logging(
        level=settings.log.level, fmt=settings.log.format, secrets=settings.secret_values()
    )
    try:
        asyncio.run(Bridge(settings, config_path=args.config).run())
    except DirectoryError as err:
        return fail(f"config error: directory.path: {err}", EXIT_CONFIG)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo  # noqa: PLC0415 - its broker and simulators, only here

    return run_demo(speed=args.speed)
