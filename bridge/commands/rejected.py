"""`clockin-bridge rejected list [--limit N] [--before ID]|show ID|reprocess [ID...|--all]`:
payloads that were not events.

`list` pages newest first and reads no payload; `show` prints one payload, bytes that are not
UTF-8 and control characters escaped (as every command prints untrusted text, common.emit).

Reprocess is for after a config or directory fix: the stored raw payload is parsed again with
the current config's subscription for its topic, at the time it was first received, and stored
through Store.ingest, so every duplicate layer applies (a payload reprocessed twice, or sent
twice, is one event; one whose device time is outside the site's window is stored held, as
the daemon stores it). The rejected row is kept and marked with the event it became; a payload
that still fails is left as it was and its new reason reported. A payload kept only in part
(the store keeps 16 KiB of each) is never parsed again: it is reported as cut.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
from datetime import UTC, datetime
from typing import Any

from bridge.commands.common import (
    EXIT_NOT_DONE,
    EXIT_OK,
    UsageError,
    emit,
    fail,
    handler,
    local_text,
    opened_store,
    settings_of,
)
from bridge.commands.progress import Progress
from bridge.config import Settings
from bridge.delivery import EventStatus
from bridge.directory.build import build_sources
from bridge.directory.file import DirectoryError
from bridge.directory.people import make_resolver, open_directory, sink_columns
from bridge.routing import Router
from bridge.store import Incoming, PersonResolver, Rejection, Store, parse_utc_text, utc_text
from bridge.store.postgres import PostgresStore

PAYLOAD_SHOWN = 2000
PAGE = 50
TOPIC_WIDTH = 60
REASON_WIDTH = 70


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = f"{text} is not a positive number"
        raise argparse.ArgumentTypeError(msg)
    return value


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    rejected = commands.add_parser("rejected", help="payloads that could not become events")
    actions = rejected.add_subparsers(dest="action", required=True)

    listing = actions.add_parser(
        "list", parents=[common], help="list rejected payloads, newest first"
    )
    listing.add_argument(
        "--all", action="store_true", help="include those already reprocessed into events"
    )
    listing.add_argument(
        "--limit", type=_positive, default=PAGE, help=f"at most this many (default {PAGE})"
    )
    listing.add_argument(
        "--before", type=int, metavar="ID", help="only those older than this id (the next page)"
    )
    listing.set_defaults(handler=handler(cmd_list))

    show = actions.add_parser("show", parents=[common], help="one rejected payload in full")
    show.add_argument("id", type=int)
    show.set_defaults(handler=handler(cmd_show))

    reprocess = actions.add_parser(
        "reprocess", parents=[common], help="parse again with the current config and directory"
    )
    reprocess.add_argument("ids", type=int, nargs="*", metavar="ID")
    reprocess.add_argument("--all", action="store_true", help="every one not reprocessed yet")
    reprocess.set_defaults(handler=handler(cmd_reprocess))


# --- pure: parsing again, as the daemon reads a message (bridge.routing) -------------------


def reparse(row: dict[str, Any], settings: Settings) -> Incoming | str:
    """The stored payload as an Incoming under the current config, or why it still fails."""
    kept = len(row["payload"])
    if kept < row["payload_size"]:
        return (
            f"payload kept only in part ({kept} of {row['payload_size']} bytes):"
            " it cannot be parsed again"
        )
    router = Router(
        settings.mqtt.subscriptions,
        site_tz=settings.site.tz,
        time_limits=settings.site.time_limits,  # the daemon's own, against when it was received
    )
    item = router.route(
        row["topic"], bytes(row["payload"]), received_at=parse_utc_text(row["received_at"])
    )
    if isinstance(item, Rejection):
        return item.reason
    if item is None:  # only a subscription's format ignores a message, so there is one
        subscription = router.subscription_for(row["topic"])
        fmt = "unknown" if subscription is None else subscription.format.value
        return f"not a clock event ({fmt} format)"
    return item


async def resolver_for(settings: Settings, store: Store | PostgresStore) -> PersonResolver:
    """The daemon's own badge → person mapping: the file merged with the synced sources."""
    try:
        directory = await open_directory(settings, store, build_sources(settings))
    except DirectoryError as err:
        msg = f"directory.path: {err}"
        raise UsageError(msg) from None
    return make_resolver(sink_columns(settings, list(settings.sinks.enabled())), directory)


# --- commands -----------------------------------------------------------------------------


def _summary(row: dict[str, Any], settings: Settings) -> dict[str, Any]:
    data = {key: value for key, value in row.items() if key != "payload"}
    data["received_at"] = local_text(row["received_at"], settings.site.tz)
    data["reprocessed_at"] = local_text(row["reprocessed_at"], settings.site.tz)
    return data


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_of(args)

    async def read() -> list[dict[str, Any]]:
        async with opened_store(settings) as store:
            return await store.rejected_page(
                limit=args.limit, before=args.before, include_reprocessed=args.all
            )

    rows = asyncio.run(read())
    more = len(rows) == args.limit
    emit(
        args,
        [_summary(row, settings) for row in rows],
        headers=("id", "received", "topic", "format", "bytes", "reason", "event"),
        rows=[
            [
                row["id"],
                local_text(row["received_at"], settings.site.tz),
                _cut(row["topic"], TOPIC_WIDTH),
                row["format"],
                row["payload_size"],
                _cut(row["reason"], REASON_WIDTH),
                row["reprocessed_as"],
            ]
            for row in rows
        ],
        empty="no rejected payloads" + ("" if args.all else " waiting"),
        footer=[f"older ones: rejected list --before {rows[-1]['id']}"] if more else [],
    )
    return EXIT_OK


def payload_text(payload: bytes) -> str:
    """A payload as text: UTF-8 where it is, other bytes as \\xNN escapes (exact: base64)."""
    return payload.decode("utf-8", errors="backslashreplace")


def cmd_show(args: argparse.Namespace) -> int:
    settings = settings_of(args)

    async def read() -> dict[str, Any] | None:
        async with opened_store(settings) as store:
            return await store.rejected_row(args.id)

    row = asyncio.run(read())
    if row is None:
        return fail(f"no rejected payload {args.id}", EXIT_NOT_DONE)
    payload = bytes(row["payload"])
    data = _summary(row, settings)
    data["payload_kept"] = len(payload)
    data["payload"] = payload_text(payload)
    data["payload_base64"] = base64.b64encode(payload).decode()
    width = max(len(key) for key in data)
    lines = [
        f"{key.ljust(width)}  {'-' if value is None else value}"
        for key, value in data.items()
        if key not in ("payload", "payload_base64")
    ]
    if len(payload) < row["payload_size"]:
        lines.append(f"(only the first {len(payload)} of {row['payload_size']} bytes were kept)")
    text = data["payload"]
    shown = text[:PAYLOAD_SHOWN] + (" ..." if len(text) > PAYLOAD_SHOWN else "")
    # One printed line per payload line: emit escapes what is left (\\r, ESC, bidi).
    lines += ["payload:", *shown.split("\n")]
    emit(args, data, footer=lines)
    return EXIT_OK


async def reprocess_rows(
    store: Store | PostgresStore,
    rows: list[dict[str, Any]],
    settings: Settings,
    resolve: PersonResolver,
) -> list[dict[str, Any]]:
    """Reprocess each row; what became of each (result: event | rejected | done_before)."""
    outcomes = []
    with Progress("reprocess", len(rows)) as bar:
        for row in rows:
            outcomes.append(await _reprocess_one(store, row, settings, resolve))
            bar.advance()
    return outcomes


async def _reprocess_one(
    store: Store | PostgresStore, row: dict[str, Any], settings: Settings, resolve: PersonResolver
) -> dict[str, Any]:
    outcome: dict[str, Any] = {"id": row["id"], "topic": row["topic"]}
    if row["reprocessed_at"] is not None:
        return {**outcome, "result": "done_before", "event": row["reprocessed_as"]}
    parsed = reparse(row, settings)
    if isinstance(parsed, str):
        return {**outcome, "result": "rejected", "reason": parsed}
    [stored] = await store.ingest(
        [parsed], resolve=resolve, received_at=parse_utc_text(row["received_at"])
    )
    marked = await store.mark_reprocessed(
        row["id"], event_key=stored.key, at=utc_text(datetime.now(UTC))
    )
    # Not marked: another reprocess got there first; the event exists once either way.
    result = "event" if marked else "done_before"
    return {**outcome, "result": result, "event": stored.key, "status": stored.status}


def cmd_reprocess(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.all):
        msg = "rejected reprocess: give ids, or --all (not both)"
        raise UsageError(msg)
    settings = settings_of(args, secrets=True)  # the directory sources, as the daemon has them

    async def run() -> tuple[list[dict[str, Any]], list[int]]:
        async with opened_store(settings) as store:
            resolve = await resolver_for(settings, store)
            if args.all:
                rows = await store.rejected_rows(include_reprocessed=False)
            else:
                rows = await store.rejected_rows(ids=args.ids)
            missing = sorted(set(args.ids) - {row["id"] for row in rows})
            return await reprocess_rows(store, rows, settings, resolve), missing

    outcomes, missing = asyncio.run(run())
    lines = []
    for item in outcomes:
        if item["result"] == "event":
            line = f"rejected {item['id']}: stored as {item['event']} ({item['status']})"
            if item["status"] == EventStatus.HELD:
                line += "; its device time is implausible: see held list"
            lines.append(line)
        elif item["result"] == "done_before":
            lines.append(f"rejected {item['id']}: already reprocessed as {item['event']}")
        else:
            lines.append(f"rejected {item['id']}: still rejected: {item['reason']}")
    lines += [f"rejected {n}: no such rejected payload" for n in missing]
    events = sum(item["result"] == "event" for item in outcomes)
    lines.append(f"reprocessed: {events} of {len(outcomes) + len(missing)} became events")
    emit(args, {"results": outcomes, "not_found": missing}, footer=lines)
    failed = missing or any(item["result"] != "event" for item in outcomes)
    return EXIT_NOT_DONE if failed else EXIT_OK
