"""`clockin-bridge check-config --config FILE`: load and validate, print a short summary.

Exit 0 when the bridge could start with it; a bad config (or directory), or a machine it could
not start on (http.listen taken, the state folder not writable, a TLS key that cannot be loaded
without a passphrase), exits 2 with the same one-line message `run` gives.
"""

from __future__ import annotations

import argparse
from typing import Any

from bridge.commands.common import EXIT_CONFIG, EXIT_OK, emit, fail, handler, settings_of
from bridge.config import Settings
from bridge.directory.file import DirectoryError, DirectoryFile
from bridge.ops.preflight import environment_problems
from bridge.store.inspect import database_summary


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    check = commands.add_parser(
        "check-config", parents=[common], help="validate a config and summarise it"
    )
    check.set_defaults(handler=handler(cmd_check_config))


def _database(settings: Settings) -> dict[str, Any]:
    """What is at store.path, read-only (a check never creates or migrates a database)."""
    return database_summary(settings.store.path)


def summary(settings: Settings) -> dict[str, Any]:
    """Raises DirectoryError for a directory the bridge could not start with."""
    path = settings.directory.path
    directory = DirectoryFile(path).current if path else None
    return {
        "site_timezone": settings.site.timezone,
        "sinks": {
            name: {"base_url": section.base_url, "directory_column": section.directory_column}
            for name, section in settings.sinks.enabled().items()
        },
        "subscriptions": [
            {"topic": s.topic, "format": s.format.value, "sinks": s.sinks or "all"}
            for s in settings.mqtt.subscriptions
        ],
        "broker": f"{settings.mqtt.host}:{settings.mqtt.port}",
        "database": _database(settings),
        "directory": None
        if directory is None
        else {"path": str(path), "people": len(directory), "problems": list(directory.problems)},
    }


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = settings_of(args, secrets=True)  # ConfigError: exit 2 in cli.main, as for `run`
    try:
        info = summary(settings)
    except DirectoryError as err:
        return fail(f"config error: directory.path: {err}", EXIT_CONFIG)
    # What `run` would meet on this machine (port, state folder, TLS files): one line each,
    # as `run` prints the first of them.
    problems = environment_problems(settings)
    for problem in problems:
        fail(f"config error: {problem}", EXIT_CONFIG)
    if problems:
        return EXIT_CONFIG
    database = info["database"]
    lines = [
        f"config {args.config}: ok",
        f"site timezone: {info['site_timezone']}",
        "sinks enabled: " + (", ".join(info["sinks"]) or "none"),
        f"broker: {info['broker']}",
    ]
    lines += [
        f"subscription: {s['topic']} ({s['format']}) -> "
        + (s["sinks"] if isinstance(s["sinks"], str) else ", ".join(s["sinks"]))
        for s in info["subscriptions"]
    ]
    db_state = (
        f"schema {database['schema']}"
        if "schema" in database
        else "exists"
        if database["exists"]
        else "not created yet"
    )
    lines.append(f"database: {database['path']} ({db_state})")
    if "problem" in database:
        lines.append(f"database problem: {database['problem']}")
    directory = info["directory"]
    if directory is None:
        lines.append("directory: none (only events with a user id can be mapped)")
    else:
        lines.append(
            f"directory: {directory['path']}: {directory['people']} people,"
            f" {len(directory['problems'])} problems"
        )
        lines += [f"  problem: {problem}" for problem in directory["problems"]]
    emit(args, info, footer=lines)
    return EXIT_OK
