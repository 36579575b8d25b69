"""bridge.events: the canonical and Tasmota parsers, table by table, then fuzzed."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.events import (
    MAX_PAYLOAD_BYTES,
    Action,
    ClockEvent,
    ImplausibleTime,
    PayloadError,
    PayloadFormat,
    TimeLimits,
    TimeProblem,
    implausible_time,
    normalise_badge,
)
from bridge.routing import parse_event, topic_terminal
from tests.strategies import (
    canonical_shaped,
    fuzz_settings,
    json_values,
    tasmota_shaped,
    to_bytes,
    valid_canonical,
)

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
RECEIVED = datetime(2026, 11, 22, 7, 0, 9, tzinfo=UTC)
CANONICAL = {"topic": "clockin/gate1/events", "pattern": "clockin/+/events"}
TASMOTA = {"topic": "tele/reader-hall/SENSOR", "pattern": "tele/+/SENSOR"}


def canonical(
    payload: dict[str, Any] | bytes,
    *,
    tz: ZoneInfo = LONDON,
    topic: str = CANONICAL["topic"],
) -> ClockEvent:
    raw = payload if isinstance(payload, bytes) else to_bytes(payload)
    event = parse_event(
        topic,
        raw,
        PayloadFormat.CANONICAL,
        pattern=CANONICAL["pattern"],
        site_tz=tz,
        received_at=RECEIVED,
    )
    assert event is not None  # the canonical format never ignores a message
    return event


def tasmota(payload: dict[str, Any] | bytes, *, topic: str = TASMOTA["topic"]) -> ClockEvent | None:
    raw = payload if isinstance(payload, bytes) else to_bytes(payload)
    return parse_event(
        topic,
        raw,
        PayloadFormat.TASMOTA,
        pattern=TASMOTA["pattern"],
        site_tz=LONDON,
        received_at=RECEIVED,
    )


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- topics -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "topic", "terminal"),
    [
        ("clockin/+/events", "clockin/gate1/events", "gate1"),
        ("tele/+/SENSOR", "tele/reader-hall/SENSOR", "reader-hall"),
        ("+/+/events", "site1/gate1/events", "site1"),  # the first '+' names the terminal
        ("clockin/#", "clockin/site1/gate1", "site1"),  # '#' too: its first level
        ("clockin/+/#", "clockin/gate1/events/raw", "gate1"),
        ("$share/bridges/clockin/+/events", "clockin/gate2/events", "gate2"),
        ("clockin/gate1/events", "clockin/gate1/events", None),  # no wildcard: no terminal
        ("clockin/x/+", "clockin", None),  # too short to reach the '+'
    ],
)
def test_topic_terminal(pattern: str, topic: str, terminal: str | None) -> None:
    assert topic_terminal(pattern, topic) == terminal


def test_an_empty_terminal_level_is_rejected() -> None:
    with pytest.raises(PayloadError, match="names no terminal"):
        canonical({"badge": "04A1"}, topic="clockin//events")


def test_a_payload_may_not_claim_another_terminal() -> None:
    """The broker's ACL vouches for the topic level: that is the terminal."""
    assert canonical({"id": 7, "badge": "04A1", "terminal": "gate1"}).terminal == "gate1"
    with pytest.raises(PayloadError, match="is not the topic's terminal 'gate1'"):
        canonical({"id": 7, "badge": "04A1", "terminal": "lobby"})


def test_on_a_fixed_topic_the_payload_names_the_terminal() -> None:
    def fixed(payload: dict[str, Any]) -> ClockEvent | None:
        return parse_event(
            "site/kiosk",
            to_bytes(payload),
            PayloadFormat.CANONICAL,
            pattern="site/kiosk",
            site_tz=LONDON,
            received_at=RECEIVED,
        )

    event = fixed({"id": 7, "badge": "04A1", "terminal": "lobby"})
    assert event is not None
    assert (event.terminal, event.key) == ("lobby", "lobby/7")
    with pytest.raises(PayloadError, match="the payload has no 'terminal'"):
        fixed({"id": 7, "badge": "04A1"})
    for bad, problem in [("#", "has one of"), ("a/b", "has one of"), ("x" * 65, "longer than")]:
        with pytest.raises(PayloadError, match=f"terminal: terminal id .* {problem}"):
            fixed({"badge": "04A1", "terminal": bad})


# --- bytes to a JSON object ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe{}", "payload is not UTF-8 text"),
        (b"", "payload is empty"),
        (b"  \n", "payload is empty"),
        (b'{"badge": "04A1"', "payload is not JSON"),
        (b"badge=04A1", "payload is not JSON"),
        (b'{"badge": "04A1", "lat": NaN}', "payload is not JSON: NaN"),
        (b'{"user": 1, "lat": Infinity}', "payload is not JSON: Infinity"),
        (b"[" * 16000, "payload is not JSON"),
        (b'{"user": ' + b"9" * 5000 + b"}", "payload is not JSON"),
        (b'["04A1", "in"]', "payload is a JSON array, not an object"),
        (b'"04A1"', "payload is a JSON string, not an object"),
        (b"42", "payload is a JSON number, not an object"),
        (b"null", "payload is a JSON null, not an object"),
        (b"true", "payload is a JSON boolean, not an object"),
    ],
)
def test_payloads_that_are_no_json_object(payload: bytes, reason: str) -> None:
    for parse in (canonical, tasmota):
        with pytest.raises(PayloadError, match=f"^{re.escape(reason)}"):
            parse(payload)


def _padded(size: int) -> bytes:
    """A valid canonical payload of exactly `size` bytes (the padding key is ignored)."""
    head = to_bytes({"badge": "04A1", "pad": ""})
    return to_bytes({"badge": "04A1", "pad": "x" * (size - len(head))})


def test_the_size_limit_is_16_kib() -> None:
    assert len(_padded(MAX_PAYLOAD_BYTES)) == MAX_PAYLOAD_BYTES
    assert canonical(_padded(MAX_PAYLOAD_BYTES)).badge == "04A1"
    too_big = _padded(MAX_PAYLOAD_BYTES + 1)
    expected = f"payload is {MAX_PAYLOAD_BYTES + 1} bytes, larger than the 16 KiB limit"
    with pytest.raises(PayloadError) as caught:
        canonical(too_big)
    assert str(caught.value) == expected


# --- badges -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("04A1B2C3", "04A1B2C3"),
        ("04a1b2c3", "04A1B2C3"),
        ("  04 a1 b2 c3 ", "04A1B2C3"),
        ("04:A1:B2:C3", "04A1B2C3"),
        ("04-a1-b2-c3", "04A1B2C3"),
        (7748328, "7748328"),
        (0, "0"),
        ("A" * 64, "A" * 64),
        ("EMP-0042", "EMP0042"),
    ],
)
def test_normalise_badge(raw: str | int, normal: str) -> None:
    assert normalise_badge(raw) == normal


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        (" : - ", "empty"),
        ("A" * 65, "longer than 64 characters"),
        ("04A1\x00", "non-printable"),
        ("04\tA1", "non-printable"),
        (True, "a boolean"),
        (False, "a boolean"),
        (-5, "negative"),
        (4.5, "a JSON number, not a string or integer"),
        (None, "a JSON null"),
        (["04A1"], "a JSON array"),
        ({"UID": "04A1"}, "a JSON object"),
    ],
)
def test_normalise_badge_rejects(raw: object, why: str) -> None:
    with pytest.raises(PayloadError, match=re.escape(why)):
        normalise_badge(raw)


# --- the canonical format -----------------------------------------------------------------


def test_the_documented_example() -> None:
    event = canonical(
        {
            "id": "gate1-000123",
            "badge": "04A1B2C3",
            "action": "in",
            "time": "2026-11-22T08:00:05+01:00",
        },
    )
    assert event == ClockEvent(
        key="gate1/gate1-000123",
        terminal="gate1",
        badge="04A1B2C3",
        user=None,
        action=Action.IN,
        time=utc(2026, 11, 22, 7, 0, 5),
        time_given=True,
        source_id="gate1-000123",
    )
    assert event.subject == "badge:04A1B2C3"


@pytest.mark.parametrize(
    ("payload", "badge", "user"),
    [
        ({"badge": "04 a1"}, "04A1", None),
        ({"badge": 7748328}, "7748328", None),
        ({"user": "emp-17"}, None, "emp-17"),
        ({"user": 17}, None, "17"),
        ({"badge": "04a1", "user": 17}, "04A1", "17"),  # both kept
        ({"badge": None, "user": 17}, None, "17"),
    ],
)
def test_badge_and_user(payload: dict[str, Any], badge: str | None, user: str | None) -> None:
    event = canonical(payload)
    assert (event.badge, event.user) == (badge, user)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({}, "needs 'badge' or 'user'"),
        ({"action": "in", "time": "2026-11-22T08:00:05Z"}, "needs 'badge' or 'user'"),
        ({"badge": None, "user": None}, "needs 'badge' or 'user'"),
        ({"badge": True}, "badge: True is not a card UID (a boolean)"),
        ({"badge": ""}, "badge: '' is not a card UID (empty)"),
        ({"badge": "A" * 65}, "badge: "),
        ({"badge": 4.5}, "badge: 4.5 is not a card UID"),
        ({"user": True}, "user: must be a string or an integer, not a JSON boolean"),
        ({"user": "  "}, "user: must not be empty"),
        ({"user": [17]}, "user: must be a string or an integer, not a JSON array"),
        ({"id": 1.5, "user": 17}, "id: must be a string or an integer"),
        ({"id": "", "user": 17}, "id: must not be empty"),
        ({"id": 10**130, "user": 17}, "id: longer than 128 characters"),
        ({"user": 17, "job": "x" * 129}, "job: longer than 128 characters"),
        ({"user": 17, "terminal": ""}, "terminal: must not be empty"),
        ({"user": 17, "action": "lunch"}, "action: must be one of in, out, break_start, break_end"),
        ({"user": 17, "action": 1}, "action: must be one of in, out, break_start, break_end"),
        ({"user": 17, "action": ""}, "action: must be one of"),
        ({"user": 17, "time": 1764000000}, "time: input should be a valid string"),
        ({"user": 17, "time": "yesterday"}, "time: 'yesterday' is not an ISO-8601 date and time"),
        ({"user": 17, "time": "2026-11-22"}, "time: '2026-11-22' has no time of day"),
        ({"user": 17, "time": "2026-11-22T25:00:00"}, "time: '2026-11-22T25:00:00' is not an"),
        (
            {"user": 17, "time": "0001-01-01T00:00:00+05:00"},
            "time: '0001-01-01T00:00:00+05:00' is out",
        ),
        ({"user": 17, "lat": 90.5}, "lat: input should be less than or equal to 90"),
        ({"user": 17, "lat": -91}, "lat: input should be greater than or equal to -90"),
        ({"user": 17, "lon": 180.01}, "lon: input should be less than or equal to 180"),
        ({"user": 17, "lon": "8.5"}, "lon: input should be a valid number"),
        ({"user": 17, "lat": True}, "lat: input should be a valid number"),
        ({"user": 17, "note": "x" * 501}, "note: longer than 500 characters"),
        ({"user": 17, "note": 5}, "note: must be a string, not a JSON number"),
        ({"user": 17, "note": "a\x1b[2Jb"}, "note: has control or invisible characters"),
        ({"user": 17, "note": "ab\u202ecd"}, "note: has control or invisible characters"),
        ({"user": 17, "note": "a\x00"}, "note: has control or invisible characters"),
        ({"user": 17, "terminal": "#"}, "terminal: '#' is not the topic's terminal 'gate1'"),
        ({"user": 17, "terminal": "gate/2"}, "terminal: 'gate/2' is not the topic's terminal"),
        ({"user": 17, "terminal": "g\u2066"}, "terminal: has non-printable characters"),
        ({"user": 17, "job": {"code": 1}}, "job: must be a string or an integer"),
    ],
)
def test_canonical_rejects(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(PayloadError) as caught:
        canonical(payload)
    assert str(caught.value).startswith(reason)


@pytest.mark.parametrize(
    ("raw", "action"),
    [
        ("in", Action.IN),
        ("OUT", Action.OUT),
        ("Break_Start", Action.BREAK_START),
        (" break_end ", Action.BREAK_END),
        (None, None),
    ],
)
def test_actions(raw: str | None, action: Action | None) -> None:
    assert canonical({"user": 17, "action": raw}).action == action


def test_an_absent_action_is_left_for_the_store_to_infer() -> None:
    assert canonical({"user": 17}).action is None


def test_optional_fields() -> None:
    event = canonical(
        {"user": 17, "job": 4711, "lat": -90, "lon": 180, "note": "x" * 500, "colour": "red"},
    )
    assert (event.job, event.lat, event.lon, event.note) == ("4711", -90.0, 180.0, "x" * 500)
    assert canonical({"user": 17, "lat": 47.37, "lon": 8.54, "job": " J-1 "}).job == "J-1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-22T08:00:05+01:00", utc(2026, 11, 22, 7, 0, 5)),
        ("2026-11-22T07:00:05Z", utc(2026, 11, 22, 7, 0, 5)),
        ("2026-11-22T02:00:05-05:00", utc(2026, 11, 22, 7, 0, 5)),
        ("2026-11-22T07:00:05.250+00:00", utc(2026, 11, 22, 7, 0, 5, 250000)),
        ("2026-11-22 07:00:05", utc(2026, 11, 22, 7, 0, 5)),  # London in winter is UTC
        ("2026-07-01T09:00:00", utc(2026, 7, 1, 8, 0, 0)),  # ... and UTC+1 in summer
    ],
)
def test_times_with_and_without_offset(raw: str, expected: datetime) -> None:
    event = canonical({"user": 17, "time": raw})
    assert event.time == expected
    assert event.time.tzinfo is UTC
    assert event.time_given


def test_without_a_time_the_receive_time_is_used() -> None:
    for payload in ({"user": 17}, {"user": 17, "time": None}):
        event = canonical(payload)
        assert (event.time, event.time_given) == (RECEIVED, False)


def test_the_receive_time_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_event(
            "clockin/gate1/events",
            b'{"user": 17}',
            PayloadFormat.CANONICAL,
            pattern="clockin/+/events",
            site_tz=LONDON,
            received_at=datetime(2026, 1, 1),  # naive: the point of the test
        )


@pytest.mark.parametrize(
    ("tz", "local", "expected", "why"),
    [
        (LONDON, "2026-03-29T00:59:59", utc(2026, 3, 29, 0, 59, 59), "last second of GMT"),
        (LONDON, "2026-03-29T01:30:00", utc(2026, 3, 29, 1, 30), "gap: read as 02:30 BST"),
        (LONDON, "2026-03-29T02:00:00", utc(2026, 3, 29, 1, 0), "first wall time after the gap"),
        (LONDON, "2026-10-25T01:30:00", utc(2026, 10, 25, 0, 30), "repeated: the first, BST"),
        (LONDON, "2026-10-25T02:30:00", utc(2026, 10, 25, 2, 30), "after the change: GMT"),
        (NEW_YORK, "2026-03-08T01:30:00", utc(2026, 3, 8, 6, 30), "before the gap: EST"),
        (NEW_YORK, "2026-03-08T02:30:00", utc(2026, 3, 8, 7, 30), "gap: read as 03:30 EDT"),
        (NEW_YORK, "2026-03-08T03:30:00", utc(2026, 3, 8, 7, 30), "after the gap: EDT"),
        (NEW_YORK, "2026-11-01T01:30:00", utc(2026, 11, 1, 5, 30), "repeated: the first, EDT"),
        (NEW_YORK, "2026-11-01T02:30:00", utc(2026, 11, 1, 7, 30), "after the change: EST"),
    ],
)
def test_site_local_times_across_dst(
    tz: ZoneInfo, local: str, expected: datetime, why: str
) -> None:
    assert canonical({"user": 17, "time": local}, tz=tz).time == expected, why


def test_an_offset_wins_over_the_site_zone() -> None:
    event = canonical({"user": 17, "time": "2026-10-25T01:30:00+00:00"}, tz=LONDON)
    assert event.time == utc(2026, 10, 25, 1, 30)  # the second 01:30, as the offset says


# --- keys ---------------------------------------------------------------------------------

DERIVED = re.compile(r"^derived:[0-9a-f]{32}$")
SWIPE = {"badge": "04A1", "action": "in", "time": "2026-11-22T08:00:05+01:00"}


@pytest.mark.parametrize(
    ("raw_id", "key"),
    [("gate1-000123", "gate1/gate1-000123"), (123, "gate1/123"), (" 9 ", "gate1/9")],
)
def test_a_terminal_id_makes_the_key(raw_id: str | int, key: str) -> None:
    assert canonical({**SWIPE, "id": raw_id}).key == key


def test_the_derived_key_is_stable_and_names_the_instant() -> None:
    key = canonical(SWIPE).key
    assert DERIVED.match(key)
    assert canonical(dict(SWIPE)).key == key
    # the same instant spelled in another offset, the badge spelled differently, extra keys
    same = {"badge": "04:a1", "action": "IN", "time": "2026-11-22T07:00:05Z", "note": "hi"}
    assert canonical(same).key == key


@pytest.mark.parametrize(
    "change",
    [
        {"badge": "04A2"},
        {"action": "out"},
        {"action": None},
        {"time": "2026-11-22T08:00:06+01:00"},
        {"badge": None, "user": "04A1"},  # a user id that looks like the badge is someone else
    ],
)
def test_the_derived_key_changes_with_each_field(change: dict[str, Any]) -> None:
    other = canonical({**SWIPE, **change}).key
    assert DERIVED.match(other)
    assert other != canonical(SWIPE).key


def test_the_derived_key_depends_on_the_terminal() -> None:
    here = canonical(SWIPE).key
    assert canonical(SWIPE, topic="clockin/gate2/events").key != here
    assert (
        canonical({**SWIPE, "terminal": "gate2"}, topic="clockin/gate2/events").key
        == canonical(SWIPE, topic="clockin/gate2/events").key
    )


def test_without_a_time_the_derived_key_uses_the_receive_time() -> None:
    event = canonical({"badge": "04A1"})
    assert DERIVED.match(event.key)
    assert event.key == canonical({"badge": "04A1", "time": RECEIVED.isoformat()}).key


# --- the Tasmota format -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "badge", "time"),
    [
        (
            {"Time": "2020-09-28T17:02:10", "PN532": {"UID": "E9F35959", "DATA": "..."}},
            "E9F35959",
            utc(2020, 9, 28, 16, 2, 10),  # London summer time
        ),
        (
            {
                "Time": "2026-01-05T08:01:00",
                "RC522": {"UID": "8a1b2c3d", "Data": "", "Type": "MIFARE 1KS"},
            },
            "8A1B2C3D",
            utc(2026, 1, 5, 8, 1),
        ),
        ({"Time": "2026-01-05T08:01:00", "RDM6300": {"UID": "0A00B1C2D3"}}, "0A00B1C2D3", None),
        (
            {"Time": "2021-01-21T16:04:12", "Wiegand": {"UID": 7748328, "Size": 26}},
            "7748328",
            utc(2021, 1, 21, 16, 4, 12),
        ),
    ],
)
def test_tasmota_readers(payload: dict[str, Any], badge: str, time: datetime | None) -> None:
    event = tasmota(payload)
    assert event is not None
    assert (event.terminal, event.badge, event.user, event.action) == (
        "reader-hall",
        badge,
        None,
        None,
    )
    assert event.time_given
    if time is not None:
        assert event.time == time
    assert DERIVED.match(event.key)


@pytest.mark.parametrize(
    "payload",
    [
        {"Time": "2026-01-05T08:01:00", "ENERGY": {"Total": 1.5, "Power": 40}},
        {"Time": "2026-01-05T08:01:00", "DS18B20": {"Id": "01144", "Temperature": 21.5}},
        {"Time": "2026-01-05T08:01:00"},
        {},
        {"pn532": {"UID": "E9F35959"}},  # Tasmota spells its keys exactly
    ],
)
def test_other_tasmota_sensors_are_ignored(payload: dict[str, Any]) -> None:
    assert tasmota(payload) is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"PN532": {"DATA": "x"}}, "PN532: needs a 'UID'"),
        ({"RC522": {"UID": None}}, "RC522: needs a 'UID'"),
        ({"RDM6300": "0A00B1C2D3"}, "RDM6300: needs a 'UID'"),
        ({"Wiegand": {"UID": ""}}, "Wiegand.UID: '' is not a card UID (empty)"),
        ({"Wiegand": {"UID": True}}, "Wiegand.UID: True is not a card UID (a boolean)"),
        ({"PN532": {"UID": "E9"}, "RC522": {"UID": "8A"}}, "more than one reader"),
        ({"Time": 1700000000, "PN532": {"UID": "E9"}}, "Time: must be an ISO-8601 string"),
        ({"Time": "soon", "PN532": {"UID": "E9"}}, "Time: 'soon' is not an ISO-8601"),
    ],
)
def test_tasmota_rejects(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(PayloadError) as caught:
        tasmota(payload)
    assert str(caught.value).startswith(reason)


def test_tasmota_key_and_time() -> None:
    swipe = {"Time": "2026-10-25T01:30:00", "PN532": {"UID": "E9F35959"}}
    first = tasmota(swipe)
    assert first is not None
    assert first.time == utc(2026, 10, 25, 0, 30)  # device-local, first of the repeated hour
    again = tasmota(swipe)
    assert again is not None
    assert again.key == first.key
    elsewhere = tasmota(swipe, topic="tele/reader-yard/SENSOR")
    assert elsewhere is not None
    assert elsewhere.key != first.key
    untimed = tasmota({"PN532": {"UID": "E9F35959"}})
    assert untimed is not None
    assert (untimed.time, untimed.time_given) == (RECEIVED, False)


# --- fuzzing: ClockEvent, None or PayloadError, nothing else -------------------------------

PATTERNS = ("clockin/+/events", "tele/+/SENSOR", "clockin/#", "fixed/topic")


def _check_contract(
    payload: bytes,
    fmt: PayloadFormat,
    topic: str = TASMOTA["topic"],
    pattern: str = "tele/+/SENSOR",
) -> None:
    """Any exception but PayloadError fails the test (Hypothesis then shrinks the input)."""
    try:
        event = parse_event(
            topic, payload, fmt, pattern=pattern, site_tz=NEW_YORK, received_at=RECEIVED
        )
    except PayloadError as err:
        assert str(err).strip()  # noqa: PT017 - a reason a person can read, for any input
        return
    if event is None:
        assert fmt is PayloadFormat.TASMOTA  # only Tasmota has messages that are no swipe
    else:
        assert isinstance(event, ClockEvent)
        assert event.key
        assert event.terminal
        assert event.time.utcoffset() == timedelta(0)
        assert event.badge is not None or event.user is not None
        if event.badge is not None:
            assert normalise_badge(event.badge) == event.badge


@fuzz_settings
@given(
    payload=st.binary(max_size=256),
    fmt=st.sampled_from(PayloadFormat),
    topic=st.text(max_size=40),
    pattern=st.sampled_from(PATTERNS),
)
def test_fuzz_bytes(payload: bytes, fmt: PayloadFormat, topic: str, pattern: str) -> None:
    _check_contract(payload, fmt, topic, pattern)


@fuzz_settings
@given(value=json_values, fmt=st.sampled_from(PayloadFormat))
def test_fuzz_json_values(value: object, fmt: PayloadFormat) -> None:
    _check_contract(to_bytes(value), fmt)


@fuzz_settings
@given(value=canonical_shaped)
def test_fuzz_canonical_shaped_objects(value: dict[str, Any]) -> None:
    _check_contract(to_bytes(value), PayloadFormat.CANONICAL)


@fuzz_settings
@given(value=tasmota_shaped)
def test_fuzz_tasmota_shaped_objects(value: dict[str, Any]) -> None:
    _check_contract(to_bytes(value), PayloadFormat.TASMOTA)


@fuzz_settings
@given(case=valid_canonical(), tz=st.sampled_from([LONDON, NEW_YORK, ZoneInfo("Asia/Kolkata")]))
def test_valid_canonical_payloads_round_trip(
    case: tuple[dict[str, Any], dict[str, Any]], tz: ZoneInfo
) -> None:
    payload, expect = case
    event = canonical(json.dumps(payload).encode(), tz=tz)
    assert (event.badge, event.user, event.action) == (
        expect["badge"],
        expect["user"],
        expect["action"],
    )
    assert event.time_given
    assert event.time.utcoffset() == timedelta(0)
    if expect["naive"] is None:
        assert event.time == expect["utc"]
    else:
        # Back on the site's wall clock it reads the same, unless it fell in a DST gap, which
        # moves it forward by the gap (an hour in these zones).
        wall = event.time.astimezone(tz).replace(tzinfo=None)
        assert wall - expect["naive"] in (timedelta(0), timedelta(hours=1))
    if "id" in payload:
        assert event.key == f"gate1/{str(payload['id']).strip()}"
    else:
        assert DERIVED.match(event.key)


# --- the plausible time window (an event outside it is held, not rejected) -----------------

RECEIVED_LATE = datetime(2026, 11, 30, 10, 0, 3, tzinfo=UTC)  # the gateway's clock


def _at(moment: datetime, *, given: bool = True) -> ClockEvent:
    return ClockEvent(
        key="k", terminal="t", badge="B1", user=None, action=None, time=moment, time_given=given
    )


def test_an_implausible_time_is_named_with_both_clocks() -> None:
    ahead = implausible_time(
        _at(datetime(2099, 1, 1, tzinfo=UTC)), received_at=RECEIVED_LATE, limits=TimeLimits()
    )
    assert ahead == ImplausibleTime(
        TimeProblem.TOO_FAR_AHEAD,
        "implausible time: device said 2099-01-01T00:00:00Z, received 2026-11-30T10:00:03Z"
        " (more than 1 day ahead, site.max_future_seconds)",
    )
    early = implausible_time(
        _at(datetime(1970, 1, 1, tzinfo=UTC)), received_at=RECEIVED_LATE, limits=TimeLimits()
    )
    assert early == ImplausibleTime(
        TimeProblem.TOO_EARLY,
        "implausible time: device said 1970-01-01T00:00:00Z, received 2026-11-30T10:00:03Z"
        " (before 2000-01-01T00:00:00Z, site.min_event_time)",
    )


@pytest.mark.parametrize(
    ("max_future", "said"),
    [
        (timedelta(days=2), "more than 2 days ahead"),
        (timedelta(hours=6), "more than 6 hours ahead"),
        (timedelta(seconds=90), "more than 90 s ahead"),
    ],
)
def test_the_limit_is_said_as_a_person_says_it(max_future: timedelta, said: str) -> None:
    limits = TimeLimits(max_future=max_future)
    found = implausible_time(
        _at(RECEIVED_LATE + max_future + timedelta(seconds=1)),
        received_at=RECEIVED_LATE,
        limits=limits,
    )
    assert found is not None
    assert said in found.reason


def test_the_window_edges_are_plausible() -> None:
    limits = TimeLimits()
    for moment in (limits.earliest, RECEIVED_LATE + limits.max_future):
        assert implausible_time(_at(moment), received_at=RECEIVED_LATE, limits=limits) is None
    # No time in the payload: the gateway's own clock, never implausible.
    far = _at(datetime(2099, 1, 1, tzinfo=UTC), given=False)
    assert implausible_time(far, received_at=RECEIVED_LATE, limits=limits) is None
