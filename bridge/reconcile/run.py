"""One reconciliation: the store's side, the vendor's side, the comparison. Shared by the
`reconcile` command and the daily run.

Day boundaries are the vendor's: Go2Clock's account zone (its checktime is that wall clock),
Q2's zone, the site's zone for McTime and TimeTrack. Entries count for the day they start on;
the store is read with a margin around the window so that a shift crossing its edge is built
whole, and only entries starting inside the window are compared, on both sides.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from bridge.config import Settings
from bridge.directory.file import Directory
from bridge.events import Action
from bridge.http import Session
from bridge.reconcile.compare import (
    Comparison,
    Delivered,
    Entry,
    Kind,
    Punch,
    break_minutes,
    compare_entries,
    compare_punches,
    entries_from,
)
from bridge.reconcile.window import Window
from bridge.store import DaemonStore, parse_utc_text, utc_text
from bridge.store.admin import Moved
from bridge.vendors.registry import BY_NAME, READBACKS

SOURCES = tuple(sorted(READBACKS, key=lambda name: BY_NAME[name].sink is None))  # sinks first
# a resend is harmless only where the vendor refuses a duplicate; the stateful sinks and
# read-only Q2: report only
REQUEUEABLE = tuple(name for name, readback in READBACKS.items() if readback.requeueable)
CHUNK_DAYS = {name: readback.chunk_days for name, readback in READBACKS.items()}
ENTRY_MARGIN = timedelta(days=2)  # how far around the window a shift is looked for


@dataclass(slots=True)
class Report:
    source: str
    window: Window
    comparison: Comparison
    chunks: int
    requeued: list[int] = field(default_factory=list)
    not_requeued: dict[int, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def count(self, kind: Kind) -> int:
        return sum(1 for f in self.comparison.findings if f.kind is kind)

    @property
    def matched(self) -> int:
        return sum(self.comparison.matched.values())

    @property
    def ok(self) -> bool:
        return not self.comparison.findings


def window_for(source: str, settings: Settings, first: date, last: date) -> Window:
    return Window(first, last, READBACKS[source].zone(settings))


def chunk_count(source: str, window: Window) -> int:
    return window.chunk_count(CHUNK_DAYS[source])


async def reconcile(
    source: str,
    *,
    settings: Settings,
    store: DaemonStore,
    session: Session,
    first: date,
    last: date,
    on_chunk: Callable[[], None] = lambda: None,
) -> Report:
    """Compare one source over days first..last; raises fetch.ReadError when the vendor
    cannot be read (then nothing was compared)."""
    window = window_for(source, settings, first, last)
    notes: list[str] = []
    if source == "go2clock":
        ours = await _punches(store, settings, window)
        theirs = await READBACKS[source].read(session, settings, window, on_chunk)
        comparison = compare_punches(ours, theirs)
    else:
        expected = await _expected(source, store, settings, window, notes)
        vendor = await _vendor_entries(source, session, settings, window, on_chunk)
        comparison = compare_entries(expected, vendor, day_of=window.day_of)
    return Report(source, window, comparison, chunk_count(source, window), notes=notes)


async def requeue_missing(store: DaemonStore, report: Report, *, now: float | None = None) -> Moved:
    """Queue the missing punches again (delivered -> pending, guarded); Go2Clock only."""
    if report.source not in REQUEUEABLE:
        msg = f"{report.source} cannot be requeued: it keeps state per person; report only"
        raise ValueError(msg)
    ids = sorted(
        {i for f in report.comparison.findings if f.kind is Kind.MISSING for i in f.delivery_ids}
    )
    moved = await store.replay(ids, now=time.time() if now is None else now)
    report.requeued, report.not_requeued = moved.changed, dict(moved.refused)
    return moved


# -- the bridge's side -------------------------------------------------------------------------


async def _punches(store: DaemonStore, settings: Settings, window: Window) -> list[Punch]:
    checktypes = settings.sinks.go2clock.checktypes
    rows = await store.sink_deliveries(
        "go2clock", since=utc_text(window.start), until=utc_text(window.end)
    )
    return [
        Punch(
            row["person"],
            parse_utc_text(row["event_time"]).astimezone(window.tz).strftime("%Y-%m-%d %H:%M:%S"),
            checktypes[Action(row["action"])],
            row["id"],
            delivered=row["state"] == "delivered",
        )
        for row in rows
        if row["person"] is not None
    ]


async def _expected(
    source: str, store: DaemonStore, settings: Settings, window: Window, notes: list[str]
) -> list[Entry]:
    since, until = utc_text(window.start - ENTRY_MARGIN), utc_text(window.end + ENTRY_MARGIN)
    readback = READBACKS[source]
    if readback.expected_from == "accepted_events":
        events = _q2_people(await store.accepted_events(since=since, until=until), settings, notes)
    else:
        rows = await store.sink_deliveries(source, since=since, until=until)
        events = [
            Delivered(
                row["person"], Action(row["action"]), parse_utc_text(row["event_time"]), row["id"]
            )
            for row in rows
            if row["state"] == "delivered" and row["person"] is not None
        ]
    entries = [e for e in entries_from(events) if window.contains(e.start)]
    if readback.breaks == "listed":
        return entries
    if readback.breaks == "minutes":
        return [_with_minutes(e) for e in entries]
    return [Entry(e.person, e.start, e.end, delivery_ids=e.delivery_ids) for e in entries]


def _with_minutes(entry: Entry) -> Entry:
    return Entry(
        entry.person,
        entry.start,
        entry.end,
        None,
        break_minutes(entry.breaks or ()),
        entry.delivery_ids,
    )


def _q2_people(rows: list[dict[str, Any]], settings: Settings, notes: list[str]) -> list[Delivered]:
    """Accepted events with the person's Q2 id (the event's user, else the directory's column)."""
    column = settings.reconcile.q2.directory_column
    path = settings.directory.path
    directory = Directory.load(path) if path is not None else Directory.empty()
    events, unknown = [], 0
    for row in rows:
        person = row["user_id"]
        if person is None and row["badge"] is not None:
            entry = directory.lookup(row["badge"])
            if entry is not None:
                person = entry.userid if column == "userid" else entry.extra.get(column)
        if not person:
            unknown += 1
            continue
        moment: datetime = parse_utc_text(row["event_time"])
        events.append(Delivered(str(person), Action(row["action"]), moment, row["id"]))
    if unknown:
        notes.append(f"{unknown} events skipped: no {column!r} for their badge in the directory")
    return events


# -- the vendor's side -------------------------------------------------------------------------


async def _vendor_entries(
    source: str,
    session: Session,
    settings: Settings,
    window: Window,
    on_chunk: Callable[[], None],
) -> list[Entry]:
    readback = READBACKS.get(source)
    if readback is None:
        msg = f"unknown source {source!r}"
        raise ValueError(msg)
    return await readback.read(session, settings, window, on_chunk)
