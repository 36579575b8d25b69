"""`clockin-bridge backup FILE`: a consistent, verified copy of the database, safe while the
daemon runs. To restore: stop the daemon, put the copy in place of store.path (and remove the
old `-wal` and `-shm` files beside it), start the daemon."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bridge.commands.common import EXIT_OK, emit, settings_of
from bridge.store.backup import backup


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "backup", parents=[common], help="a consistent copy of the database, while it runs"
    )
    parser.add_argument("file", type=Path, help="where to write the copy (replaced if it exists)")
    parser.set_defaults(handler=cmd_backup)


def cmd_backup(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    report = backup(settings.store.path, args.file)
    emit(
        args,
        {
            "file": str(report.path),
            "bytes": report.bytes,
            "events": report.events,
            "deliveries": report.deliveries,
            "integrity": "ok",
        },
        footer=[
            (
                f"backed up {settings.store.path} to {report.path}: {report.bytes} bytes,"
                f" {report.events} events, {report.deliveries} deliveries, integrity ok"
            )
        ],
    )
    return EXIT_OK
