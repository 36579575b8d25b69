"""`clockin-bridge unmapped list`: badges whose events wait for a directory entry."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bridge.commands.common import EXIT_OK, emit, handler, local_text, opened_store, settings_of
from bridge.store import StoreRole


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    unmapped = commands.add_parser("unmapped", help="badges waiting for a directory entry")
    actions = unmapped.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", parents=[common], help="list unmapped badges")
    listing.set_defaults(handler=handler(cmd_list))


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    tz = settings.site.tz

    async def read() -> list[dict[str, Any]]:
        async with opened_store(settings, role=StoreRole.READ_ONLY) as store:
            return await store.unmapped_badges()

    badges = asyncio.run(read())
    for entry in badges:
        entry["first_seen"] = local_text(entry["first_seen"], tz)
        entry["last_seen"] = local_text(entry["last_seen"], tz)
    emit(
        args,
        badges,
        # inferred: how many of those events had no direction from the terminal
        headers=("badge", "events", "inferred", "first_seen", "last_seen", "sinks"),
        rows=[
            [
                e["badge"],
                e["events"],
                e["inferred"],
                e["first_seen"],
                e["last_seen"],
                ",".join(e["sinks"]),
            ]
            for e in badges
        ],
        empty="no unmapped badges",
    )
    return EXIT_OK
