"""Pure: the clock event model and the rules every payload format shares.

No I/O here, so everything is tested without a broker. A parser returns a ClockEvent, returns
None for a message that is not a clock event at all (another Tasmota sensor), or raises
PayloadError with a reason a person can read. The per-format parsers live in bridge.formats and
bridge.routing reads a message through them; this module holds the model and the rules every
format shares (badge, time, key, terminal, the plausible time window), and imports neither.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

MAX_PAYLOAD_BYTES = 16 * 1024
MAX_BADGE_CHARS = 64
MAX_TERMINAL_CHARS = 64
# A terminal id becomes an MQTT topic level (its feedback topic), a metrics label and a log
# field: no topic separators or wildcards, no `$` (reserved topics), nothing invisible.
_TERMINAL_FORBIDDEN = frozenset("/+#$")
_BADGE_SEPARATORS = str.maketrans("", "", " :-")


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
    # Set when a site-local time fell in a DST change: the ambiguous hour or the skipped one.
    time_warning: str | None = None
    source_id: str | None = None  # the terminal's own id for the event, echoed in feedback
    job: str | None = None
    lat: float | None = None
    lon: float | None = None
    note: str | None = None

    @property
    def subject(self) -> str:
        """Who swiped, as used for double-swipe detection and in/out inference."""
        return f"user:{self.user}" if self.badge is None else f"badge:{self.badge}"


def terminal_problem(value: str) -> str | None:
    """Why `value` cannot be a terminal id, or None when it can."""
    if not value:
        return "is empty"
    if len(value) > MAX_TERMINAL_CHARS:
        return f"is longer than {MAX_TERMINAL_CHARS} characters"
    if not value.isprintable():  # control, format (bidi) and separator characters
        return "has control or invisible characters"
    if not _TERMINAL_FORBIDDEN.isdisjoint(value):
        return "has one of / + # $"
    return None


def check_terminal(value: str) -> str:
    """`value` if it is a usable terminal id, else PayloadError saying why."""
    problem = terminal_problem(value)
    if problem is not None:
        msg = f"terminal id {show(value)} {problem}"
        raise PayloadError(msg)
    return value


@dataclass(frozen=True, slots=True)
class TimeLimits:
    """The event times a terminal may plausibly send: a device clock reset to 1970 or set
    years ahead is a fault for an operator to look at, not a punch to book as it is."""

    earliest: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    max_future: timedelta = timedelta(days=1)


class TimeProblem(enum.StrEnum):
    """Which limit a device time broke (a metrics label: the set stays this small)."""

    TOO_EARLY = "too_early"  # before site.min_event_time
    TOO_FAR_AHEAD = "too_far_ahead"  # more than site.max_future_seconds past the gateway's clock


@dataclass(frozen=True, slots=True)
class ImplausibleTime:
    """Why an event's device time cannot be booked as it is: the event is stored and held for
    an operator (`held complete ID --use-received-time`), not rejected."""

    problem: TimeProblem
    reason: str  # names both clocks, e.g. "implausible time: device said ..., received ..."


def implausible_time(
    event: ClockEvent, *, received_at: datetime, limits: TimeLimits
) -> ImplausibleTime | None:
    """What is wrong with the event's device time, or None when it lies within `limits`."""
    if not event.time_given:
        return None  # the gateway's own clock
    if event.time < limits.earliest:
        problem = TimeProblem.TOO_EARLY
        why = f"before {_utc(limits.earliest)}, site.min_event_time"
    elif event.time - received_at > limits.max_future:
        problem = TimeProblem.TOO_FAR_AHEAD
        why = f"more than {_span(limits.max_future)} ahead, site.max_future_seconds"
    else:
        return None
    reason = (
        f"implausible time: device said {_utc(event.time)}, received {_utc(received_at)} ({why})"
    )
    return ImplausibleTime(problem, reason)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _span(span: timedelta) -> str:
    """A limit as a person says it: '1 day', '6 hours', '90 s'."""
    seconds = span.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds:g} s"


def normalise_badge(value: object) -> str:
    """A card UID as the terminals and the directory write it → one canonical spelling.

    Strings lose surrounding blanks and the separators ' ', ':', '-' and become upper-case;
    an integer (Wiegand readers send one) becomes its decimal string.
    """
    if isinstance(value, bool):  # bool is an int subclass, but True is no card
        why = "a boolean"
    elif isinstance(value, int):
        if value >= 0:
            return str(value)
        why = "negative"
    elif isinstance(value, str):
        text = value.strip().translate(_BADGE_SEPARATORS).upper()
        if text and len(text) <= MAX_BADGE_CHARS and text.isprintable():
            return text
        if not text:
            why = "empty"
        elif len(text) > MAX_BADGE_CHARS:
            why = f"longer than {MAX_BADGE_CHARS} characters"
        else:
            why = "has non-printable characters"
    else:
        why = f"a JSON {json_kind(value)}, not a string or integer"
    msg = f"{show(value)} is not a card UID ({why})"
    raise PayloadError(msg)


def parse_time(value: str, site_tz: ZoneInfo) -> datetime:
    """ISO-8601 → aware UTC. Without an offset the time is site-local wall time.

    fold=0 (zoneinfo's default) picks the first of a repeated fall-back hour, and moves a time
    in the spring-forward gap forward by the gap, as a clock that missed the change would.
    """
    text = value.strip()
    try:
        date.fromisoformat(text)
    except ValueError:
        pass
    else:
        msg = f"{show(value)} has no time of day"
        raise PayloadError(msg)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        msg = f"{show(value)} is not an ISO-8601 date and time"
        raise PayloadError(msg) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=site_tz)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 shifted out of datetime's range
        msg = f"{show(value)} is out of range"
        raise PayloadError(msg) from None


def wall_clock_warning(value: str, site_tz: ZoneInfo) -> str | None:
    """Why a site-local time (no offset) needs a second look, or None.

    In the fall-back hour the wall time happens twice: parse_time takes the first occurrence.
    In the spring-forward gap it never happens: parse_time moves it forward by the gap.
    """
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        return None
    first = parsed.replace(tzinfo=site_tz, fold=0)
    second = parsed.replace(tzinfo=site_tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return None
    round_trip = first.astimezone(UTC).astimezone(site_tz).replace(tzinfo=None)
    if round_trip == parsed:
        return f"{parsed.isoformat()} happens twice in {site_tz.key}: took the first (earlier)"
    return (
        f"{parsed.isoformat()} does not exist in {site_tz.key} (clocks went forward):"
        f" taken as {round_trip.isoformat()}"
    )


def derived_key(event: ClockEvent) -> str:
    """An idempotency key for an event whose terminal sent no id of its own.

    A JSON array rather than a '|' join, so no field value can imitate a separator.
    """
    fields = [event.terminal, event.subject, event.action or "auto", event.time.isoformat()]
    digest = hashlib.sha256(json.dumps(fields).encode()).hexdigest()
    return f"derived:{digest[:32]}"


def json_kind(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "boolean"),
        ((int, float), "number"),
        (str, "string"),
        (list, "array"),
        (dict, "object"),
    ]
    for kind, name in kinds:
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def show(value: object, limit: int = 40) -> str:
    """repr() cut short: a reason must stay readable when the payload is 16 KiB of junk."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
