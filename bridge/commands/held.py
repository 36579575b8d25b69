"""`clockin-bridge held list|show ID|complete ID --to T|--from T|--use-received-time|release
ID|drop ID`: deliveries the bridge refused to guess, waiting for an operator. Each says why
(`reason`):

- TimeTrack shifts (bridge.vendors.timetrack.shift): held with the person's state left as it was.
  `complete --to` closes the open shift at that time (complete_shift); `complete --from` opens
  the missing shift at that time (start_shift) for an `out` that had none. Either saves the new
  state and requeues the held delivery (pending, due now) in one transaction; the sink records
  the closed shift before handling the requeued job.
- "implausible time: ...": an event whose device time is outside site.min_event_time and
  site.max_future_seconds; all its deliveries are held, listed with both the device's time and
  the time the gateway received it. `complete --use-received-time` books the event at its
  received time and requeues all its held deliveries in one transaction
  (bridge.store.time_repair).
- "late: older than the last action sent at ...": a punch that arrived after a newer one of the
  same person was applied at McTime or TimeTrack (bridge.store.queue). `release` sends it as it
  is, out of order; `drop` gives it up (fix the entry at the vendor by hand).
- "late: this ... arrived after the ... was inferred without it": a swipe without an action that
  would change a direction already inferred (bridge.store.intake). `release` sends it with the
  direction shown; `drop` gives it up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

from bridge.commands import deliveries
from bridge.commands.common import (
    EXIT_NOT_DONE,
    EXIT_OK,
    emit,
    fail,
    handler,
    local_text,
    opened_store,
    parse_moment,
    report_moved,
    settings_of,
)
from bridge.commands.dead import show_one
from bridge.commands.held_time import book_at_received_time
from bridge.store import StoreRole
from bridge.vendors.timetrack.shift import ShiftStateError, complete_shift, start_shift

HEADERS = (*deliveries.HEADERS[:6], "received", "attempts", "open_shift", "reason")


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    held = commands.add_parser("held", help="deliveries waiting for an operator's decision")
    actions = held.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", parents=[common], help="list held deliveries")
    listing.set_defaults(handler=handler(cmd_list))

    show = actions.add_parser("show", parents=[common], help="one held delivery in full")
    show.add_argument("id", type=int)
    show.set_defaults(handler=handler(lambda args: show_one(args, state="held")))

    complete = actions.add_parser(
        "complete",
        parents=[common],
        help="close the open shift at --to (or open the missing one at --from), then requeue",
    )
    complete.add_argument("id", type=int)
    when = complete.add_mutually_exclusive_group(required=True)
    when.add_argument("--to", help="the shift's end (ISO-8601, site-local when naive)")
    when.add_argument("--from", dest="from_", help="the missing shift's start (start_shift)")
    when.add_argument(
        "--use-received-time",
        action="store_true",
        help="an event held for its implausible device time: book it when the gateway got it",
    )
    complete.add_argument("--note", help="a note for a shift opened with --from")
    complete.set_defaults(handler=handler(cmd_complete))

    release = actions.add_parser(
        "release",
        parents=[common],
        help="send as it is (a late punch out of order, a guessed direction as shown)",
    )
    release.add_argument("ids", type=int, nargs="+", metavar="ID")
    release.set_defaults(handler=handler(cmd_release))

    drop = actions.add_parser("drop", parents=[common], help="give up (kept as 'dropped')")
    drop.add_argument("ids", type=int, nargs="+", metavar="ID")
    drop.set_defaults(handler=handler(cmd_drop))


def _open_shift(state: Mapping[str, Any], tz: Any) -> str | None:
    shift = state.get("shift") if isinstance(state, Mapping) else None
    if not isinstance(shift, Mapping) or not isinstance(shift.get("from"), str):
        return None
    try:
        start = parse_moment(shift["from"], tz)
    except ValueError:
        return str(shift["from"])
    text = start.astimezone(tz).isoformat(timespec="minutes")
    return f"{text} (closed)" if shift.get("to") else text


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    tz = settings.site.tz

    async def read() -> list[tuple[dict[str, Any], dict[str, Any]]]:
        async with opened_store(settings, role=StoreRole.READ_ONLY) as store:
            rows = await store.deliveries_in("held")
            return [(row, await store.person_state(row["sink"], row["person"])) for row in rows]

    found = asyncio.run(read())
    table = []
    data = []
    for row, saved in found:
        shown = deliveries.as_row(row, tz)
        received = local_text(row["received_at"], tz)
        table.append([*shown[:6], received, shown[6], _open_shift(saved, tz), row["last_error"]])
        data.append({**deliveries.as_json(row, tz), "person_state": saved})
    emit(args, data, headers=HEADERS, rows=table, empty="no held deliveries")
    return EXIT_OK


def cmd_complete(args: argparse.Namespace) -> int:
    if args.use_received_time:
        return book_at_received_time(args)
    settings = settings_of(args)
    tz = settings.site.tz
    if args.to is not None:
        to = parse_moment(args.to, tz)

        def change(state: Mapping[str, Any]) -> Mapping[str, Any]:
            return complete_shift(state, to=to)

        what = f"shift closed at {to.astimezone(tz).isoformat(timespec='seconds')}"
    else:
        start = parse_moment(args.from_, tz)

        def change(state: Mapping[str, Any]) -> Mapping[str, Any]:
            return start_shift(state, from_=start, note=args.note)

        what = f"shift opened at {start.astimezone(tz).isoformat(timespec='seconds')}"

    async def requeue() -> str:
        async with opened_store(settings) as store:
            return await store.requeue_held(args.id, change=change, now=time.time())

    try:
        new_state = asyncio.run(requeue())
    except LookupError as err:
        return fail(str(err.args[0]), EXIT_NOT_DONE)
    except ShiftStateError as err:
        return fail(f"delivery {args.id}: {err}; nothing changed", EXIT_NOT_DONE)
    state = json.loads(new_state)
    emit(
        args,
        {"requeued": args.id, "person_state": state, "done": what},
        footer=[f"delivery {args.id}: {what}; requeued (pending, due now)"],
    )
    return EXIT_OK


def cmd_release(args: argparse.Namespace) -> int:
    settings = settings_of(args)

    async def release() -> Any:
        async with opened_store(settings) as store:
            return await store.release_held(args.ids, now=time.time())

    moved = asyncio.run(release())
    return report_moved(args, moved, verb="released", expect="held", extra={})


def cmd_drop(args: argparse.Namespace) -> int:
    settings = settings_of(args)

    async def drop() -> Any:
        async with opened_store(settings) as store:
            return await store.move(args.ids, expect="held", to="dropped", now=time.time())

    moved = asyncio.run(drop())
    return report_moved(args, moved, verb="dropped", expect="held", extra={})
