"""`held complete ID --use-received-time`: book an event held for its implausible device time at
the time the gateway received it (bridge.store.time_repair does it in one transaction).

The directory is asked only when a held delivery has no person yet, as `rejected reprocess`
asks it; a delivery it still cannot map waits as unmapped, like any other.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from zoneinfo import ZoneInfo

from bridge.commands.common import (
    EXIT_NOT_DONE,
    EXIT_OK,
    emit,
    fail,
    local_text,
    opened_store,
    settings_of,
)
from bridge.commands.rejected import resolver_for
from bridge.store.time_repair import ReceivedTimeBooking


def book_at_received_time(args: argparse.Namespace) -> int:
    settings = settings_of(args, secrets=True)  # the directory sources, as the daemon has them
    tz = settings.site.tz

    async def book() -> ReceivedTimeBooking:
        async with opened_store(settings) as store:
            held = await store.held_for_time(args.id)
            people: dict[str, str | None] = {}
            if held.needs_people:
                resolve = await resolver_for(settings, store)
                people = dict(resolve(held.swiper))
            return await store.book_at_received_time(args.id, people=people, now=time.time())

    try:
        booked = asyncio.run(book())
    except LookupError as err:
        return fail(str(err.args[0]), EXIT_NOT_DONE)
    data = dataclasses.asdict(booked)
    data["device_time"] = local_text(booked.device_time, tz)
    data["event_time"] = local_text(booked.event_time, tz)
    emit(args, data, footer=_lines(args.id, booked, tz))
    return EXIT_OK


def _lines(delivery_id: int, booked: ReceivedTimeBooking, tz: ZoneInfo) -> list[str]:
    how = "inferred again at that time" if booked.action_inferred else "as the terminal sent it"
    first = (
        f"delivery {delivery_id}: event {booked.event_key} booked at its received time"
        f" {local_text(booked.event_time, tz)} (the device said"
        f" {local_text(booked.device_time, tz)}); action {booked.action}, {how}"
    )
    lines = [first]
    listed: list[tuple[list[int], str]] = [
        (booked.requeued, "requeued (pending, due now)"),
        (booked.unmapped, "unmapped (the directory does not know the person yet)"),
        (booked.dropped, f"dropped: a double swipe of {booked.duplicate_of} at that time"),
    ]
    lines += [f"{what}: {_ids(ids)}" for ids, what in listed if ids]
    if booked.later_inferred:
        lines.append(
            f"note: {booked.later_inferred} later swipe(s) of this person were inferred without"
            " this one and are left as they are; check them"
        )
    return lines


def _ids(ids: list[int]) -> str:
    return ", ".join(str(n) for n in ids)
