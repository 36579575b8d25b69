"""`clockin-bridge dead list|show ID|retry ID...|drop ID...`: deliveries a vendor refused."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bridge.commands import deliveries
from bridge.commands.common import (
    EXIT_NOT_DONE,
    EXIT_OK,
    SINK_NAMES,
    UsageError,
    emit,
    handler,
    opened_store,
    report_moved,
    settings_of,
)
from bridge.store import StoreRole


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    dead = commands.add_parser("dead", help="deliveries a vendor refused for good")
    actions = dead.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", parents=[common], help="list dead deliveries")
    listing.add_argument("--sink", choices=SINK_NAMES, help="only this sink")
    listing.set_defaults(handler=handler(cmd_list))

    show = actions.add_parser("show", parents=[common], help="one dead delivery in full")
    show.add_argument("id", type=int)
    show.set_defaults(handler=handler(cmd_show))

    retry = actions.add_parser(
        "retry", parents=[common], help="send again: pending, due now, attempts reset"
    )
    retry.add_argument("ids", type=int, nargs="*", metavar="ID")
    retry.add_argument("--all", action="store_true", help="every dead delivery (of --sink)")
    retry.add_argument("--sink", choices=SINK_NAMES, help="every dead delivery of this sink")
    retry.set_defaults(handler=handler(cmd_retry))

    drop = actions.add_parser(
        "drop", parents=[common], help="give up for good (kept as 'dropped', never deleted)"
    )
    drop.add_argument("ids", type=int, nargs="+", metavar="ID")
    drop.set_defaults(handler=handler(cmd_drop))


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    tz = settings.site.tz

    async def rows() -> list[dict[str, Any]]:
        async with opened_store(settings, role=StoreRole.READ_ONLY) as store:
            return await store.deliveries_in("dead", sink=args.sink)

    found = asyncio.run(rows())
    emit(
        args,
        [deliveries.as_json(row, tz) for row in found],
        headers=deliveries.HEADERS,
        rows=[deliveries.as_row(row, tz) for row in found],
        empty="no dead deliveries",
    )
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    return show_one(args, state="dead")


def show_one(args: argparse.Namespace, *, state: str) -> int:
    settings = settings_of(args)
    tz = settings.site.tz

    async def read() -> tuple[dict[str, Any] | None, dict[str, Any]]:
        async with opened_store(settings, role=StoreRole.READ_ONLY) as store:
            row = await store.delivery(args.id)
            saved = {} if row is None else await store.person_state(row["sink"], row["person"])
            return row, saved

    row, saved = asyncio.run(read())
    if row is None:
        emit(args, {"error": f"no delivery {args.id}"}, empty=f"no delivery {args.id}")
        return EXIT_NOT_DONE
    data = deliveries.as_json(row, tz)
    data["person_state"] = saved
    lines = deliveries.detail_lines(row, tz)
    if saved:
        lines.append(f"person_state  {saved}")
    if row["state"] != state:
        lines.append(f"(not {state}: it is {row['state']})")
    emit(args, data, footer=lines)
    return EXIT_OK if row["state"] == state else EXIT_NOT_DONE


def cmd_retry(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.all or args.sink):
        msg = "dead retry: give delivery ids, or --all / --sink SINK (not both)"
        raise UsageError(msg)
    settings = settings_of(args)

    async def retry() -> Any:
        async with opened_store(settings) as store:
            ids = args.ids or await store.ids_in("dead", sink=args.sink)
            return await store.move(ids, expect="dead", to="pending", reset_attempts=True)

    moved = asyncio.run(retry())
    return report_moved(args, moved, verb="retried", expect="dead", extra={})


def cmd_drop(args: argparse.Namespace) -> int:
    settings = settings_of(args)

    async def drop() -> Any:
        async with opened_store(settings) as store:
            return await store.move(args.ids, expect="dead", to="dropped", now=time.time())

    moved = asyncio.run(drop())
    return report_moved(args, moved, verb="dropped", expect="dead", extra={})
