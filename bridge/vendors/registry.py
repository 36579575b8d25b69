"""Every vendor the bridge knows, in one table: its sink, its directory source, its reconcile
reader. Sink wiring (bridge.app), the directory's sources (bridge.directory.build) and
reconcile (bridge.reconcile.run) derive from VENDORS; a new vendor is one folder under
bridge/vendors/ and one entry here (and its config sections in bridge.config).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from bridge.config import Settings
from bridge.delivery import Sink
from bridge.reconcile.window import Window
from bridge.vendors.go2clock import readback as go2clock_readback
from bridge.vendors.go2clock.sink import Go2ClockSink
from bridge.vendors.go2clock.users import Go2ClockUsers
from bridge.vendors.mctime import readback as mctime_readback
from bridge.vendors.mctime.sink import McTimeSink
from bridge.vendors.mctime.users import McTimeUsers
from bridge.vendors.q2 import readback as q2_readback
from bridge.vendors.q2.users import Q2Users
from bridge.vendors.timetrack import readback as timetrack_readback
from bridge.vendors.timetrack.sink import TimeTrackSink
from bridge.vendors.timetrack.users import TimeTrackUsers

MakeSink = Callable[[Settings, aiohttp.ClientSession], Sink]
MakeUsers = Callable[[Settings], Any]  # a bridge.directory.Source
# (session, settings, window, on_chunk) -> what the vendor holds (Punch or Entry rows)
ReadBack = Callable[
    [aiohttp.ClientSession, Settings, Window, Callable[[], None]], Awaitable[list[Any]]
]


@dataclass(frozen=True, slots=True)
class Readback:
    read: ReadBack
    chunk_days: int
    zone: Callable[[Settings], Any]  # the vendor's day boundaries (a ZoneInfo)
    requeueable: bool = False  # a resend is harmless (the vendor refuses a duplicate)
    # How the vendor holds breaks, so the expected side is shaped alike: "listed" (each break),
    # "minutes" (a total per entry) or "none" (not held: not compared).
    breaks: Literal["listed", "minutes", "none"] = "none"
    # Whose punches it should hold: this sink's delivered ones, or (a read-only vendor such as
    # Q2) every accepted event, the person named by the directory.
    expected_from: Literal["deliveries", "accepted_events"] = "deliveries"


@dataclass(frozen=True, slots=True)
class Vendor:
    name: str
    sink: MakeSink | None = None  # enabled by sinks.<name>.enabled
    users: MakeUsers | None = None  # enabled by directory.sources.<name>.enabled
    readback: Readback | None = None  # `reconcile --sink <name>`
    # The vendor keeps state per person (a running clock, an open shift) that each punch moves
    # on: a punch older than one already applied there is held, never sent out of order.
    keeps_state: bool = False


def _site(settings: Settings) -> Any:
    return settings.site.tz


VENDORS: Sequence[Vendor] = (
    Vendor(
        "go2clock",
        sink=lambda settings, session: Go2ClockSink(
            session=session, config=settings.sinks.go2clock, account_tz=settings.go2clock_tz
        ),
        users=Go2ClockUsers.from_settings,
        readback=Readback(
            lambda session, settings, window, on_chunk: go2clock_readback.read_punches(
                session, settings.sinks.go2clock, window, on_chunk=on_chunk
            ),
            go2clock_readback.CHUNK_DAYS,
            lambda settings: settings.go2clock_tz,
            requeueable=True,
        ),
    ),
    Vendor(
        "q2",
        users=Q2Users.from_settings,
        readback=Readback(
            lambda session, settings, window, on_chunk: q2_readback.read_entries(
                session, settings.reconcile.q2, window, on_chunk=on_chunk
            ),
            q2_readback.CHUNK_DAYS,
            lambda settings: settings.q2_tz,
            expected_from="accepted_events",
        ),
    ),
    Vendor(
        "mctime",
        sink=lambda settings, session: McTimeSink(
            session=session, config=settings.sinks.mctime, site_tz=settings.site.tz
        ),
        users=McTimeUsers.from_settings,
        readback=Readback(
            lambda session, settings, window, on_chunk: mctime_readback.read_entries(
                session, settings.sinks.mctime, window, on_chunk=on_chunk
            ),
            mctime_readback.CHUNK_DAYS,
            _site,
            breaks="listed",
        ),
        keeps_state=True,
    ),
    Vendor(
        "timetrack",
        sink=lambda settings, session: TimeTrackSink(
            session=session, config=settings.sinks.timetrack, site_tz=settings.site.tz
        ),
        users=TimeTrackUsers.from_settings,
        readback=Readback(
            lambda session, settings, window, on_chunk: timetrack_readback.read_entries(
                session,
                settings.sinks.timetrack,
                window,
                site_tz=settings.site.tz,
                on_chunk=on_chunk,
            ),
            timetrack_readback.CHUNK_DAYS,
            _site,
            breaks="minutes",
        ),
        keeps_state=True,
    ),
)  # the order is the directory's merge order: the first source's name stands

BY_NAME = {vendor.name: vendor for vendor in VENDORS}
KEEPS_STATE = frozenset(vendor.name for vendor in VENDORS if vendor.keeps_state)
READBACKS = {vendor.name: vendor.readback for vendor in VENDORS if vendor.readback is not None}


def build_sinks(settings: Settings, session: aiohttp.ClientSession) -> list[Sink]:
    """The enabled sinks (sinks.<name>.enabled), sharing the one HTTP session."""
    enabled = settings.sinks.enabled()
    return [
        vendor.sink(settings, session)
        for vendor in VENDORS
        if vendor.sink is not None and vendor.name in enabled
    ]
