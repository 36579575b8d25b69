"""What goes into and comes out of the store, and its time text format."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypedDict

from bridge.delivery import EventStatus
from bridge.events import Action, ClockEvent, ImplausibleTime


class Identified(Protocol):
    """Who swiped, as the directory looks them up: a ClockEvent, or a stored event's Swiper."""

    @property
    def badge(self) -> str | None: ...

    @property
    def user(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Swiper:
    """Who swiped a stored event (looked up again when the directory learns them)."""

    badge: str | None
    user: str | None


# Who a person is at each sink; None where the directory does not know them (yet).
PersonResolver = Callable[[Identified], Mapping[str, str | None]]
# The person's schedule group (inference.group_column of their directory entry), or None.
GroupResolver = Callable[[Identified], str | None]


class StoreError(Exception):
    """The database cannot be used (not SQLite, failed integrity check, newer schema)."""


class StoreWriteError(Exception):
    """A write failed (disk full, I/O error); nothing of it was committed. Try again later."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """A parsed event to store, with the topic it came on."""

    event: ClockEvent
    topic: str
    sinks: frozenset[str] | None = None  # the subscription's routing; None: every sink
    format: str = "canonical"
    payload: bytes = b""  # as received: kept as a rejection if the event cannot be stored
    # The person at each sink (None: not in the directory yet), looked up before the write.
    people: Mapping[str, str | None] | None = None
    # The person's schedule group (directory column inference.group_column), for inference.
    group: str | None = None
    # The device time is implausible: store the event with its deliveries held, not rejected.
    held: ImplausibleTime | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A payload that could not become an event: kept whole, with the reason."""

    topic: str
    format: str
    payload: bytes
    reason: str
    received_at: datetime
    terminal: str = ""  # as far as the topic tells


@dataclass(frozen=True, slots=True)
class Stored:
    """What became of one incoming message."""

    key: str
    status: EventStatus
    action: Action | None = None
    terminal: str | None = None
    reason: str | None = None
    # Sinks whose delivery was held at once for an operator (a late swipe that would change a
    # direction already decided): `reason` says why.
    held: tuple[str, ...] = ()


class SinkQueue(TypedDict):
    """One sink's deliveries: how many in each state, and the oldest undelivered one's age."""

    states: dict[str, int]
    oldest_pending_seconds: float | None


class QueueStatus(TypedDict):
    """Store.status(): counts for the status command, page, metrics and outage summaries.

    A TypedDict rather than a class: it is what `status --json` prints, as it is."""

    events: dict[str, int]  # by status
    rejected: int
    rejected_bytes: int
    rejected_max_bytes: int
    rejected_pruned: int
    retried: int  # deliveries that took more than one attempt
    inferred: int  # events whose direction the bridge chose (no action from the terminal)
    sinks: dict[str, SinkQueue]


def utc_text(moment: datetime) -> str:
    """Fixed-width UTC text (2026-11-23T07:00:00.000000Z), so that string order is time order
    in SQL. isoformat rather than strftime: this runs several times per event."""
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    return utc.isoformat(timespec="microseconds")[:26] + "Z"


def parse_utc_text(text: str) -> datetime:
    """The inverse of utc_text (fromisoformat reads the Z since Python 3.11; 40x strptime)."""
    return datetime.fromisoformat(text)
