"""Pure: the clock event model and the payload parsers, one per subscription format.

No I/O here, so everything is tested without a broker. A parser returns a ClockEvent, returns
None for a message that is not a clock event at all (another Tasmota sensor), or raises
PayloadError with a reason a person can read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

MAX_PAYLOAD_BYTES = 16 * 1024


class Action(enum.StrEnum):
    IN = "in"
    OUT = "out"
    BREAK_START = "break_start"
    BREAK_END = "break_end"


class PayloadFormat(enum.StrEnum):
    CANONICAL = "canonical"
    TASMOTA = "tasmota"


class PayloadError(ValueError):
    """The payload cannot become a clock event; str(err) is the reason kept for inspection."""


@dataclass(frozen=True, slots=True)
class ClockEvent:
    key: str  # idempotency key: the same event arriving twice has the same key
    terminal: str
    badge: str | None  # normalised card UID (upper-case, no separators) or None
    user: str | None  # the person's vendor id, when the terminal sends it directly
    action: Action | None  # None: infer in/out from the person's previous event
    time: datetime  # aware, UTC
    time_given: bool  # False when the payload had no time and the receive time was used
    job: str | None = None
    lat: float | None = None
    lon: float | None = None
    note: str | None = None

    @property
    def subject(self) -> str:
        """Who swiped, as used for double-swipe detection and in/out inference."""
        return f"user:{self.user}" if self.badge is None else f"badge:{self.badge}"


def parse_event(
    topic: str,
    payload: bytes,
    fmt: PayloadFormat,
    *,
    pattern: str,
    site_tz: ZoneInfo,
    received_at: datetime,
) -> ClockEvent | None:
    raise NotImplementedError  # filled in by the events work item
