"""Tasmota RFID readers, published on tele/<device>/SENSOR.

    {"Time": "2020-09-28T17:02:10", "PN532": {"UID": "E9F35959", "DATA": ""}}
    {"Time": "2021-01-21T16:04:12", "Wiegand": {"UID": 7748328, "Size": 26}}

The same topic carries every other sensor on the device (ENERGY, DS18B20, ...): a message
without a reader key is not a swipe and is ignored, not rejected. Tasmota's Time is the
device's local wall time without an offset, so it is read in the site's zone.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from bridge.events import (
    ClockEvent,
    PayloadError,
    derived_key,
    normalise_badge,
    parse_time,
    wall_clock_warning,
)

if TYPE_CHECKING:
    from datetime import datetime
    from zoneinfo import ZoneInfo

READERS = ("PN532", "RC522", "RDM6300", "Wiegand")


def parse(
    data: dict[str, Any],
    *,
    terminal: str,
    site_tz: ZoneInfo,
    received_at: datetime,
) -> ClockEvent | None:
    found = [name for name in READERS if name in data]
    if not found:
        return None
    if len(found) > 1:  # which swipe came first is unknowable: keep it for a person to read
        msg = f"more than one reader in one message: {', '.join(found)}"
        raise PayloadError(msg)
    reader = data[found[0]]
    if not isinstance(reader, dict) or reader.get("UID") is None:
        msg = f"{found[0]}: needs a 'UID'"
        raise PayloadError(msg)
    try:
        badge = normalise_badge(reader["UID"])
    except PayloadError as err:
        msg = f"{found[0]}.UID: {err}"
        raise PayloadError(msg) from None
    when, given = _time(data.get("Time"), site_tz, received_at)
    event = ClockEvent(
        key="",
        terminal=terminal,
        badge=badge,
        user=None,
        action=None,  # a reader has no in/out buttons: the store infers it
        time=when,
        time_given=given,
        time_warning=wall_clock_warning(data["Time"], site_tz) if given else None,
    )
    return dataclasses.replace(event, key=derived_key(event))


def _time(value: object, site_tz: ZoneInfo, received_at: datetime) -> tuple[datetime, bool]:
    if value is None:
        return received_at, False
    if not isinstance(value, str):
        msg = "Time: must be an ISO-8601 string"
        raise PayloadError(msg)
    try:
        return parse_time(value, site_tz), True
    except PayloadError as err:
        msg = f"Time: {err}"
        raise PayloadError(msg) from None
