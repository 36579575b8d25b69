"""What every sink shares: the job it is handed, the result it returns. Pure models."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from bridge.events import Action


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"  # the vendor already holds it: counts as delivered
    RETRY_LATER = "retry_later"
    PERMANENT_FAILURE = "permanent_failure"
    PAUSED = "paused"  # credentials refused: stop the sink, keep the events
    HELD = "held"  # cannot be sent without a person deciding (e.g. an `out` with no open shift)


class DeliveryState(enum.StrEnum):
    """Where one event's delivery to one sink stands (the `deliveries.state` column)."""

    UNMAPPED = "unmapped"  # waiting for the directory to know the person
    PENDING = "pending"  # due now or at next_attempt_at
    INFLIGHT = "inflight"  # claimed: being sent
    HELD = "held"  # waits for a person's decision (held complete / drop)
    DELIVERED = "delivered"
    DEAD = "dead"  # failed for good; dead retry sends it again
    DROPPED = "dropped"  # an operator gave it up; kept for the record


class EventStatus(enum.StrEnum):
    """What became of one incoming message (the `events.status` column, and `rejected`)."""

    ACCEPTED = "accepted"
    UNMAPPED = "unmapped"  # stored; some sink does not know the person yet
    DUPLICATE = "duplicate"  # a double swipe: stored, not sent
    # Stored with an implausible device time: its deliveries are held for an operator, and it
    # is nobody's previous swipe until `held complete --use-received-time` gives it a time.
    HELD = "held"
    REDELIVERED = "redelivered"  # the same event again (MQTT redelivery): nothing stored
    REJECTED = "rejected"  # not an event: kept in the rejected table


@dataclass(frozen=True, slots=True)
class Settlement:
    """What the store writes for a sink's answer: the delivery's next state, whether the
    attempt counts, when to try again and what to keep as the last error."""

    state: DeliveryState
    retry_at: float | None = None  # PENDING: when it is due again
    attempt_counts: bool = True  # False: the sink paused, not the event's fault
    error: str | None = None


ERROR_KEPT_CHARS = 500


def settlement_of(result: Result, *, retry_at: float, now: float) -> Settlement:
    """The one mapping from a sink's answer to what becomes of the delivery; the store
    persists it, and health, metrics, logs and feedback read the same Settlement."""
    error = result.detail[:ERROR_KEPT_CHARS] or None
    match result.outcome:
        case Outcome.DELIVERED | Outcome.DUPLICATE:
            return Settlement(DeliveryState.DELIVERED)
        case Outcome.PERMANENT_FAILURE:
            return Settlement(DeliveryState.DEAD, error=error)
        case Outcome.HELD:  # waits for an operator; does not block the person's later punches
            return Settlement(DeliveryState.HELD, error=error)
        case Outcome.PAUSED:  # give the attempt back and keep it first in line
            return Settlement(DeliveryState.PENDING, now, attempt_counts=False, error=error)
        case Outcome.RETRY_LATER:
            return Settlement(DeliveryState.PENDING, retry_at, error=error)


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    detail: str = ""
    retry_after: float | None = None  # seconds, when the vendor said (429 Retry-After)
    # The person's new state at this sink (a running clock, an open shift), saved in the same
    # transaction as the outcome; None leaves the saved state as it is.
    state: Mapping[str, Any] | None = None
    # Delivered, but the vendor changed something else to take it (McTime 201: an existing
    # entry overwritten or trimmed): worth a warning line for whoever checks payroll.
    warn: bool = False
    # RETRY_LATER with no answer at all: the connection failed or timed out. Evidence that the
    # vendor is down, where an answered 5xx may be one bad request behind a load balancer.
    unreachable: bool = False

    @classmethod
    def delivered(
        cls, detail: str = "", *, state: Mapping[str, Any] | None = None, warn: bool = False
    ) -> Result:
        return cls(Outcome.DELIVERED, detail, state=state, warn=warn)

    @classmethod
    def duplicate(cls, detail: str = "", *, state: Mapping[str, Any] | None = None) -> Result:
        return cls(Outcome.DUPLICATE, detail, state=state)

    @classmethod
    def retry(
        cls,
        detail: str,
        retry_after: float | None = None,
        *,
        state: Mapping[str, Any] | None = None,
        unreachable: bool = False,
    ) -> Result:
        return cls(Outcome.RETRY_LATER, detail, retry_after, state, unreachable=unreachable)

    @classmethod
    def dead(cls, detail: str, *, state: Mapping[str, Any] | None = None) -> Result:
        return cls(Outcome.PERMANENT_FAILURE, detail, state=state)

    @classmethod
    def paused(cls, detail: str) -> Result:
        return cls(Outcome.PAUSED, detail)

    @classmethod
    def held(cls, detail: str, *, state: Mapping[str, Any] | None = None) -> Result:
        return cls(Outcome.HELD, detail, state=state)


@dataclass(frozen=True, slots=True)
class Job:
    """One delivery of one event to one sink, as claimed from the store."""

    delivery_id: int
    event_key: str
    sink: str
    person: str  # the person's id at this sink's vendor
    action: Action
    time: datetime  # aware, UTC
    terminal: str
    attempt: int  # 1 for the first try; counted at claim time
    job: str | None = None
    lat: float | None = None
    lon: float | None = None
    note: str | None = None
    # The person's saved state at this sink when the job was claimed ({} when none yet).
    state: Mapping[str, Any] = field(default_factory=dict)
    stored_at: float = 0.0  # unix time the delivery was queued, for the latency histogram
    source_id: str | None = None  # the terminal's own id for the event


class Sink(Protocol):
    name: str

    async def send(self, job: Job) -> Result: ...
