"""`clockin-bridge directory list|show BADGE|sync`: the merged people directory.

`list` and `show` read the file and the sources' cache (the daemon's database) and merge them
as the daemon does. `sync` fetches the enabled sources now and writes the cache; a running
daemon notices within directory.reload_seconds and releases the events it now maps (a stopped
one does at its next start). Exit codes: 0 done, 1 a badge not mapped or a source failed,
2 a config error.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bridge.commands.common import (
    EXIT_CONFIG,
    EXIT_NOT_DONE,
    EXIT_OK,
    SINK_NAMES,
    emit,
    fail,
    handler,
    local_from_unix,
    opened_store,
    settings_of,
)
from bridge.config import Settings
from bridge.directory.build import ORDER, build_sources
from bridge.directory.file import Directory, DirectoryError, Person
from bridge.directory.live import cached_records
from bridge.directory.merge import Merged, merge
from bridge.directory.sync import sync
from bridge.events import PayloadError, normalise_badge
from bridge.http import new_session


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    directory = commands.add_parser("directory", help="the people directory (file and vendors)")
    actions = directory.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", parents=[common], help="everyone mapped, and problems")
    listing.set_defaults(handler=handler(cmd_list))
    show = actions.add_parser("show", parents=[common], help="one badge and where it comes from")
    show.add_argument("badge")
    show.set_defaults(handler=handler(cmd_show))
    syncing = actions.add_parser("sync", parents=[common], help="fetch the sources now")
    syncing.set_defaults(handler=handler(cmd_sync))


# --- reading ----------------------------------------------------------------------------------


def _source_names(settings: Settings) -> list[str]:
    enabled = settings.directory.sources.enabled()
    return [name for name in ORDER if name in enabled]


def _file(settings: Settings) -> Directory | None:
    path = settings.directory.path
    return Directory.load(path) if path is not None else None


async def _read(settings: Settings) -> tuple[Merged, list[dict[str, Any]]]:
    file = _file(settings)
    async with opened_store(settings) as store:
        records = await cached_records(store, _source_names(settings))
        state = await store.directory_sync_state()
    return merge(file, records), state


def _sink_columns(settings: Settings) -> dict[str, str]:
    sinks = settings.sinks
    sections = {"go2clock": sinks.go2clock, "mctime": sinks.mctime, "timetrack": sinks.timetrack}
    enabled = [name for name in SINK_NAMES if sections[name].enabled] or list(SINK_NAMES)
    return {name: sections[name].directory_column for name in enabled}


def _sink_id(person: Person, column: str) -> str | None:
    value = person.userid if column == "userid" else person.extra.get(column)
    return value or None


def _person_data(person: Person, merged: Merged, columns: dict[str, str]) -> dict[str, Any]:
    return {
        "badge": person.badge,
        "name": person.name,
        "userid": person.userid,
        "extra": dict(person.extra),
        "ids": {sink: _sink_id(person, column) for sink, column in columns.items()},
        "sources": dict(merged.origins.get(person.badge, {})),
    }


def _state_data(state: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    tz = settings.site.tz
    enabled = set(_source_names(settings))
    return [
        {
            **row,
            "enabled": row["source"] in enabled,
            "synced_at": local_from_unix(row["synced_at"], tz),
            "changed_at": local_from_unix(row["changed_at"], tz),
            "failed_at": local_from_unix(row["failed_at"], tz),
        }
        for row in state
    ]


def _state_lines(state: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in state:
        if not row["enabled"]:
            continue
        synced = row["synced_at"] or "never"
        line = f"source {row['source']}: {row['records']} records, synced {synced}"
        if row["error"]:
            line += f"; failing since {row['failed_at']}: {row['error']} (last synced people kept)"
        lines.append(line)
    return lines


# --- the commands -----------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_of(args, secrets=True)
    try:
        merged, state = asyncio.run(_read(settings))
    except DirectoryError as err:
        return fail(f"config error: directory.path: {err}", EXIT_CONFIG)
    columns = _sink_columns(settings)
    people = merged.directory.people()
    states = _state_data(state, settings)
    data = {
        "people": [_person_data(person, merged, columns) for person in people],
        "problems": list(merged.directory.problems),
        "sources": states,
    }
    rows = [
        [
            person.badge,
            person.name or None,
            *(_sink_id(person, column) for column in columns.values()),
            ",".join(sorted(set(merged.origins.get(person.badge, {}).values()))),
        ]
        for person in people
    ]
    footer = [*_state_lines(states), *(f"problem: {p}" for p in merged.directory.problems)]
    emit(
        args,
        data,
        headers=("badge", "name", *columns, "from"),
        rows=rows,
        empty="no people in the directory",
        footer=footer,
    )
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    settings = settings_of(args, secrets=True)
    try:
        badge = normalise_badge(args.badge)
    except PayloadError as err:
        return fail(f"badge {args.badge!r}: {err}", EXIT_CONFIG)
    try:
        merged, _ = asyncio.run(_read(settings))
    except DirectoryError as err:
        return fail(f"config error: directory.path: {err}", EXIT_CONFIG)
    person = merged.directory.lookup(badge)
    problems = [p for p in merged.directory.problems if f"badge {badge} " in p]
    origins = merged.origins.get(badge, {})
    data: dict[str, Any] = {"badge": badge, "mapped": person is not None, "problems": problems}
    rows: list[list[object]] = []
    if person is not None:
        data["person"] = _person_data(person, merged, _sink_columns(settings))
        values = {"userid": person.userid, "name": person.name, **person.extra}
        rows = [[column, value, origins.get(column)] for column, value in values.items() if value]
    footer = [f"problem: {p}" for p in problems]
    if person is None and not problems:
        footer.append(f"badge {badge} is not in the directory")
    emit(args, data, headers=("column", "value", "from"), rows=rows, footer=footer)
    return EXIT_OK if person is not None else EXIT_NOT_DONE


def cmd_sync(args: argparse.Namespace) -> int:
    settings = settings_of(args, secrets=True)
    sources = build_sources(settings)
    if not sources:
        return fail("no directory source is enabled (directory.sources.*.enabled)", EXIT_CONFIG)
    try:
        file = _file(settings)
    except DirectoryError as err:
        return fail(f"config error: directory.path: {err}", EXIT_CONFIG)

    async def run() -> tuple[list[Any], Merged]:
        async with opened_store(settings) as store, new_session() as session:
            outcomes = await sync(store, session, sources)
            records = await cached_records(store, [source.name for source in sources])
        return outcomes, merge(file, records)

    outcomes, merged = asyncio.run(run())
    data = {
        "sources": [
            {
                "source": o.source,
                "ok": o.ok,
                "records": o.records,
                "changed": o.changed,
                "error": o.error,
            }
            for o in outcomes
        ],
        "people": len(merged.directory),
        "problems": list(merged.directory.problems),
    }
    rows = [
        [
            o.source,
            "ok" if o.ok else "failed",
            o.records if o.ok else None,
            ("yes" if o.changed else "no") if o.ok else None,
            o.error,
        ]
        for o in outcomes
    ]
    footer = [
        f"{len(merged.directory)} people mapped; {len(merged.conflicts)} conflicts",
        *(f"problem: {p}" for p in merged.directory.problems),
    ]
    if any(not o.ok for o in outcomes):
        footer.append("a failed source keeps its last synced people")
    emit(
        args,
        data,
        headers=("source", "result", "records", "changed", "error"),
        rows=rows,
        footer=footer,
    )
    return EXIT_OK if all(o.ok for o in outcomes) else EXIT_NOT_DONE
