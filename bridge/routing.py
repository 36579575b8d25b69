"""Pure: one MQTT message → the subscription it came by → its format's parser → what to store.

Ingest and `rejected reprocess` both read a message through `Router.route`, so a payload parsed
again after a config fix is read by exactly the rules the daemon applies live: the topic picks
the subscription, the subscription's format picks the parser, the site's time window marks an
implausible device time (the event is held, not rejected), and what cannot become an event is a
`Rejection` with a reason a person can read.

No I/O here, no logging, no metrics: those stay with the caller (bridge.ingest.consumer).
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bridge.events import (
    MAX_PAYLOAD_BYTES,
    ClockEvent,
    PayloadError,
    PayloadFormat,
    TimeLimits,
    check_terminal,
    implausible_time,
    json_kind,
    show,
    terminal_problem,
)
from bridge.formats import PARSERS
from bridge.formats.canonical import MAX_TEXT_CHARS
from bridge.store import Incoming, Rejection

if TYPE_CHECKING:
    from collections.abc import Sequence
    from zoneinfo import ZoneInfo

    from bridge.config import Subscription

# A topic is kept with its rejected payload up to this length: one that long can name no valid
# terminal, and MQTT allows 64 KiB topics, which would otherwise be stored whole.
MAX_TOPIC_KEPT = 1024
# A site has a few terminal topics: each one's subscription is remembered instead of matching
# the filters again for every message (that matching showed in the profile). Bounded: this many
# topics of at most MAX_CACHED_TOPIC characters; longer ones are matched every time.
CACHED_TOPICS = 4096
MAX_CACHED_TOPIC = 256


class Router:
    """The site's subscriptions, its zone and its time limits: reads one message at a time."""

    def __init__(
        self, subscriptions: Sequence[Subscription], *, site_tz: ZoneInfo, time_limits: TimeLimits
    ) -> None:
        self._subscriptions = tuple(subscriptions)
        self._site_tz = site_tz
        self._time_limits = time_limits
        self._cached = functools.lru_cache(maxsize=CACHED_TOPICS)(self._find)

    def subscription_for(self, topic: str) -> Subscription | None:
        """The first subscription whose filter matches `topic`, or None."""
        if len(topic) > MAX_CACHED_TOPIC:
            return self._find(topic)
        return self._cached(topic)

    def _find(self, topic: str) -> Subscription | None:
        return next((s for s in self._subscriptions if topic_matches(s.topic, topic)), None)

    def route(
        self, topic: str, payload: bytes, *, received_at: datetime
    ) -> Incoming | Rejection | None:
        """An event to store, a payload to keep with the reason it is no event, or None: not a
        clock event at all (another sensor of a Tasmota device). Raises only on a bug."""
        subscription = self.subscription_for(topic)
        if subscription is None:  # the broker sent a topic we did not ask for
            return rejection(
                topic,
                payload,
                fmt="unknown",
                reason="no subscription matches",
                received_at=received_at,
            )
        fmt = subscription.format
        try:
            event = parse_event(
                topic,
                payload,
                fmt,
                pattern=subscription.topic,
                site_tz=self._site_tz,
                received_at=received_at,
            )
        except PayloadError as err:
            return rejection(
                topic,
                payload,
                fmt=fmt.value,
                reason=str(err),
                received_at=received_at,
                terminal=topic_terminal(subscription.topic, topic) or "",
            )
        if event is None:
            return None
        sinks = None if subscription.sinks is None else frozenset(subscription.sinks)
        # A time outside the site's window is stored and held for an operator, not rejected.
        held = implausible_time(event, received_at=received_at, limits=self._time_limits)
        return Incoming(event, topic, sinks, fmt.value, payload, held=held)


def rejection(
    topic: str,
    payload: bytes,
    *,
    fmt: str,
    reason: str,
    received_at: datetime,
    terminal: str = "",
) -> Rejection:
    """A Rejection whose terminal is a usable id or empty, and whose topic is kept short."""
    if terminal and terminal_problem(terminal) is not None:
        terminal = ""
    if len(topic) > MAX_TOPIC_KEPT:
        topic = f"{topic[:MAX_TOPIC_KEPT]}...({len(topic.encode())} bytes)"
    return Rejection(topic, fmt, payload, reason, received_at, terminal)


def payload_id(payload: bytes) -> str | None:
    """The `id` a rejected payload carries, for the terminal's feedback: a JSON object's `id`
    that would pass as the canonical format's (a string or an integer, trimmed, not empty, at
    most MAX_TEXT_CHARS printable characters), as the accepted feedback shows it; else None."""
    try:
        value = decode_object(payload).get("id")
    except PayloadError:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None
    return text if 0 < len(text) <= MAX_TEXT_CHARS and text.isprintable() else None


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching ('+' one level, '#' the rest; '$share/<group>/' ignored)."""
    levels = pattern.split("/")
    if levels[0] == "$share":  # $share/<group>/<filter>: the group is no topic level
        levels = levels[2:]
    parts = topic.split("/")
    for n, level in enumerate(levels):
        if level == "#":
            return True
        if n >= len(parts) or (level not in ("+", parts[n])):
            return False
    return len(parts) == len(levels)


def topic_terminal(pattern: str, topic: str) -> str | None:
    """The terminal the topic names (the level at the pattern's first wildcard), or None when
    the pattern has no wildcard or the topic is too short to reach it."""
    levels = pattern.split("/")
    if levels[0] == "$share":
        levels = levels[2:]
    parts = topic.split("/")
    for i, level in enumerate(levels):
        if level in ("+", "#"):
            return parts[i] if i < len(parts) else None
    return None


def parse_event(
    topic: str,
    payload: bytes,
    fmt: PayloadFormat,
    *,
    pattern: str,
    site_tz: ZoneInfo,
    received_at: datetime,
) -> ClockEvent | None:
    """One MQTT message → a ClockEvent, None (not a clock event), or PayloadError."""
    if received_at.tzinfo is None:
        msg = "received_at must be timezone-aware"  # a caller bug, not a bad payload
        raise ValueError(msg)
    parser = PARSERS[PayloadFormat(fmt)]
    data = decode_object(payload)
    from_topic = topic_terminal(pattern, topic)
    if from_topic is not None:
        # Checked even before the payload: the topic is stored with the event, so a 60 KB
        # topic level must not get in behind a valid payload.
        if not from_topic:
            msg = f"topic {show(topic)} names no terminal (pattern {show(pattern)})"
            raise PayloadError(msg)
        try:
            check_terminal(from_topic)
        except PayloadError as err:
            msg = f"topic: {err}"
            raise PayloadError(msg) from None
    event = parser(
        data,
        terminal=from_topic or "",
        site_tz=site_tz,
        received_at=received_at.astimezone(UTC),
    )
    if event is None:
        return None
    if from_topic is None:  # a fixed topic: the payload says which terminal it is
        if not event.terminal:
            msg = (
                f"topic {show(topic)} names no terminal (pattern {show(pattern)})"
                " and the payload has no 'terminal'"
            )
            raise PayloadError(msg)
        try:
            check_terminal(event.terminal)
        except PayloadError as err:
            msg = f"terminal: {err}"
            raise PayloadError(msg) from None
    elif event.terminal != from_topic:
        # The broker's ACL lets a terminal publish only on its own topic: the topic is the
        # identity it vouches for, and a payload may not claim to be another terminal.
        msg = (
            f"terminal: {show(event.terminal)} is not the topic's terminal {show(from_topic)}"
            " (a terminal publishes only its own events)"
        )
        raise PayloadError(msg)
    return event


def decode_object(payload: bytes) -> dict[str, Any]:
    """Bytes → a JSON object, or PayloadError saying which step failed."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        msg = f"payload is {len(payload)} bytes, larger than the 16 KiB limit"
        raise PayloadError(msg)
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as err:
        msg = f"payload is not UTF-8 text (bad byte at {err.start})"
        raise PayloadError(msg) from None
    if not text.strip():
        msg = "payload is empty"
        raise PayloadError(msg)
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        msg = f"payload is not JSON: {err.msg} at char {err.pos}"
        raise PayloadError(msg) from None
    except (ValueError, RecursionError) as err:  # NaN, a 5000-digit number, [[[[…]]]]
        msg = f"payload is not JSON: {str(err)[:80] or type(err).__name__}"
        raise PayloadError(msg) from None
    if not isinstance(data, dict):
        msg = f"payload is a JSON {json_kind(data)}, not an object"
        raise PayloadError(msg)
    return data


def _reject_constant(name: str) -> None:
    msg = f"{name} is not valid JSON"  # json.loads accepts NaN and Infinity unless told not to
    raise ValueError(msg)
