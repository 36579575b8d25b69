"""`clockin-bridge replay --sink S --since T [--until T]`: send delivered events again.

For a vendor that lost data. Deliveries are unique per (event, sink), so the delivered rows in
the range go back to pending, due now, with `replayed` counted; the claim query sends them in
per-person order like any other. Vendor duplicates stay harmless (Go2Clock answers "already
exists").

Only Go2Clock can be replayed: McTime and TimeTrack keep a per-person state (a running clock, an
open shift), and old actions sent again would be judged against today's state, toggling a break
or opening a shift that is long closed. Those are mended at the vendor, not by resending.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bridge.commands.common import (
    EXIT_NOT_DONE,
    EXIT_OK,
    UsageError,
    emit,
    handler,
    moment_text,
    opened_store,
    parse_moment,
    settings_of,
)
from bridge.commands.progress import Progress
from bridge.store.admin import CHUNK, Moved
from bridge.vendors.registry import VENDORS

# Sinks where sending a punch again is harmless: the vendor refuses what it already holds.
REPLAYABLE_SINKS = tuple(
    vendor.name
    for vendor in VENDORS
    if vendor.sink is not None and vendor.readback is not None and vendor.readback.requeueable
)


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    replay = commands.add_parser(
        "replay", parents=[common], help="send a sink's delivered events of a time range again"
    )
    replay.add_argument(
        "--sink",
        required=True,
        choices=REPLAYABLE_SINKS,
        help="only go2clock: resending is harmless there (the stateful sinks are not)",
    )
    replay.add_argument(
        "--since", required=True, help="ISO-8601 date or date-time (site-local when naive)"
    )
    replay.add_argument("--until", help="exclusive; a bare date includes that whole day")
    replay.set_defaults(handler=handler(cmd_replay))


def cmd_replay(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    tz = settings.site.tz
    since = parse_moment(args.since, tz)
    until = None if args.until is None else parse_moment(args.until, tz, end_of_day=True)
    if until is not None and until <= since:
        msg = f"replay: --until {args.until} is not after --since {args.since}"
        raise UsageError(msg)

    async def run() -> Moved:
        async with opened_store(settings) as store:
            ids = await store.delivered_between(
                args.sink,
                since=moment_text(since),
                until=None if until is None else moment_text(until),
            )
            moved = Moved()
            with Progress("replay", len(ids)) as bar:
                for start in range(0, len(ids), CHUNK):
                    part = await store.replay(ids[start : start + CHUNK], now=time.time())
                    moved.changed += part.changed
                    moved.refused.update(part.refused)
                    bar.advance(len(ids[start : start + CHUNK]))
            return moved

    moved = asyncio.run(run())
    # Rows that left 'delivered' between the listing and the update (e.g. replayed by a second
    # operator at the same moment) are not sent twice; they are reported.
    refused = {str(k): v for k, v in sorted(moved.refused.items())}
    end = "now" if until is None else until.astimezone(tz).isoformat()
    window = f"{since.astimezone(tz).isoformat()} .. {end}"
    lines = [f"replayed {len(moved.changed)} {args.sink} deliveries ({window})"]
    lines += [f"delivery {k}: is {v}, not delivered; left as it was" for k, v in refused.items()]
    emit(
        args,
        {
            "replayed": moved.changed,
            "not_changed": refused,
            "sink": args.sink,
            "since": since.isoformat(),
            "until": None if until is None else until.isoformat(),
        },
        footer=lines,
    )
    return EXIT_NOT_DONE if refused else EXIT_OK
