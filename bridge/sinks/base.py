"""What every sink shares: the job it is handed, the result it returns, HTTP classification."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from bridge.events import Action


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"  # the vendor already holds it: counts as delivered
    RETRY_LATER = "retry_later"
    PERMANENT_FAILURE = "permanent_failure"
    PAUSED = "paused"  # credentials refused: stop the sink, keep the events


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    detail: str = ""
    retry_after: float | None = None  # seconds, when the vendor said (429 Retry-After)

    @classmethod
    def delivered(cls, detail: str = "") -> Result:
        return cls(Outcome.DELIVERED, detail)

    @classmethod
    def duplicate(cls, detail: str = "") -> Result:
        return cls(Outcome.DUPLICATE, detail)

    @classmethod
    def retry(cls, detail: str, retry_after: float | None = None) -> Result:
        return cls(Outcome.RETRY_LATER, detail, retry_after)

    @classmethod
    def dead(cls, detail: str) -> Result:
        return cls(Outcome.PERMANENT_FAILURE, detail)

    @classmethod
    def paused(cls, detail: str) -> Result:
        return cls(Outcome.PAUSED, detail)


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


class Sink(Protocol):
    name: str

    async def send(self, job: Job) -> Result: ...


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form); None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(0.0, seconds)


def classify_http_status(status: int, retry_after: str | None = None) -> Result | None:
    """The outcome an HTTP status alone decides, or None when the body must be read."""
    if status == 429:
        return Result.retry("HTTP 429 Too Many Requests", parse_retry_after(retry_after))
    if status >= 500:
        return Result.retry(f"HTTP {status}")
    return None
