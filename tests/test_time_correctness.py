"""DST edges of site-local times, and terminal clocks far off the gateway's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from bridge.events import ClockEvent, PayloadFormat, wall_clock_warning
from bridge.ingest.skew import ClockSkewWatch
from bridge.routing import parse_event

RECEIVED = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "local", "expected_utc", "warning"),
    [
        # London, spring forward: 01:00 -> 02:00 on 2026-03-29; 01:30 does not exist.
        ("Europe/London", "2026-03-29T01:30:00", "2026-03-29T01:30:00+00:00", "does not exist"),
        # London, fall back: 02:00 -> 01:00 on 2026-10-25; 01:30 happens twice (BST first).
        ("Europe/London", "2026-10-25T01:30:00", "2026-10-25T00:30:00+00:00", "happens twice"),
        # New York, spring forward: 02:00 -> 03:00 on 2026-03-08.
        ("America/New_York", "2026-03-08T02:30:00", "2026-03-08T07:30:00+00:00", "does not exist"),
        # New York, fall back: 02:00 -> 01:00 on 2026-11-01; first 01:30 is EDT (UTC-4).
        ("America/New_York", "2026-11-01T01:30:00", "2026-11-01T05:30:00+00:00", "happens twice"),
        # An ordinary time on the same days: no warning.
        ("Europe/London", "2026-10-25T03:30:00", "2026-10-25T03:30:00+00:00", None),
        ("America/New_York", "2026-03-08T04:00:00", "2026-03-08T08:00:00+00:00", None),
    ],
)
def test_site_local_times_at_dst_changes(
    zone: str, local: str, expected_utc: str, warning: str | None
):
    payload = f'{{"id": "1", "badge": "04A1", "action": "in", "time": "{local}"}}'.encode()
    event = parse_event(
        "clockin/gate/events",
        payload,
        PayloadFormat.CANONICAL,
        pattern="clockin/+/events",
        site_tz=ZoneInfo(zone),
        received_at=RECEIVED,
    )
    assert event is not None
    assert event.time.isoformat() == expected_utc
    if warning is None:
        assert event.time_warning is None
    else:
        assert event.time_warning is not None
        assert warning in event.time_warning


def test_tasmota_local_time_in_the_gap_is_flagged():
    payload = b'{"Time":"2026-03-29T01:15:00","PN532":{"UID":"E9F35959"}}'
    event = parse_event(
        "tele/reader1/SENSOR",
        payload,
        PayloadFormat.TASMOTA,
        pattern="tele/+/SENSOR",
        site_tz=ZoneInfo("Europe/London"),
        received_at=RECEIVED,
    )
    assert event is not None
    assert event.time_warning is not None
    assert "does not exist" in event.time_warning


def test_a_time_with_an_offset_is_never_flagged():
    assert wall_clock_warning("2026-10-25T01:30:00+01:00", ZoneInfo("Europe/London")) is None


def _event(terminal: str, offset_seconds: float, *, given: bool = True) -> ClockEvent:
    return ClockEvent(
        key=f"{terminal}/{offset_seconds}",
        terminal=terminal,
        badge="04A1",
        user=None,
        action=None,
        time=RECEIVED + timedelta(seconds=offset_seconds),
        time_given=given,
    )


def test_clock_skew_is_logged_once_counted_always_and_never_rewritten():
    watch = ClockSkewWatch(max_skew_seconds=300)
    with capture_logs() as logs:
        for _ in range(3):
            event = _event("gate1", -3600)
            watch.check(event, received_at=RECEIVED)
            assert event.time == RECEIVED - timedelta(hours=1)  # untouched
        watch.check(_event("gate2", 100), received_at=RECEIVED)  # within the limit
        watch.check(_event("gate1", 5), received_at=RECEIVED)  # back in sync
        watch.check(_event("gate3", 9999, given=False), received_at=RECEIVED)  # receive time
    assert watch.skewed_events == {"gate1": 3}
    names = [(entry["event"], entry["terminal"]) for entry in logs]
    assert names == [("terminal.clock_skew", "gate1"), ("terminal.clock_ok", "gate1")]
    assert logs[0]["skew_seconds"] == -3600.0
