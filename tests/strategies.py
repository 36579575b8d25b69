"""Hypothesis strategies for the payload parsers, shared by the test modules.

HYPOTHESIS_EXAMPLES=20000 pytest ... runs the property tests long (the default stays quick).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from bridge.events import Action

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "200"))

# No deadline: the first call imports pydantic. No database: keep the repo free of state.
fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _json(*, finite: bool) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=not finite, allow_infinity=not finite)
        | st.text(max_size=30)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=12,
    )


json_values = _json(finite=False)  # json.dumps writes NaN/Infinity, which the parser rejects
valid_json_values = _json(finite=True)


CANONICAL_KEYS = ("id", "badge", "user", "action", "time", "job", "lat", "lon", "note", "terminal")
TASMOTA_READERS = ("PN532", "RC522", "RDM6300", "Wiegand")
time_like = st.one_of(
    json_values,
    st.datetimes().map(datetime.isoformat),
    st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
)


def _partial(keys: tuple[str, ...], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({}, optional=dict.fromkeys(keys, values))


# Objects shaped like real payloads, with junk in the fields: reaches the validators.
canonical_shaped = _partial(CANONICAL_KEYS, st.one_of(json_values, time_like))
tasmota_shaped = st.fixed_dictionaries(
    {},
    optional={
        "Time": time_like,
        **dict.fromkeys(
            TASMOTA_READERS,
            st.one_of(json_values, st.fixed_dictionaries({"UID": json_values})),
        ),
        "ENERGY": json_values,
    },
)


def to_bytes(value: object) -> bytes:
    return json.dumps(value).encode()


# --- valid canonical payloads -------------------------------------------------------------

HEX = "0123456789ABCDEF"
card_uids = st.text(alphabet=HEX, min_size=2, max_size=32)


@st.composite
def badge_spellings(draw: st.DrawFn) -> tuple[str | int, str]:
    """(a badge as a terminal might send it, its normalised form)."""
    if draw(st.booleans()):
        number = draw(st.integers(min_value=0, max_value=2**64))
        return number, str(number)
    uid = draw(card_uids)
    pairs = [uid[i : i + 2] for i in range(0, len(uid), 2)]
    spelled = draw(st.sampled_from(["", " ", ":", "-"])).join(pairs)
    if draw(st.booleans()):
        spelled = spelled.lower()
    return f"{draw(st.sampled_from(['', ' ']))}{spelled}", uid


offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes)),
)
event_times = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1))
identifiers = st.one_of(
    st.integers(min_value=0, max_value=2**53),
    st.text(alphabet=st.characters(categories=["L", "N", "P"]), min_size=1, max_size=40),
)


@st.composite
def valid_canonical(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """(a valid canonical payload, what the parser must make of it)."""
    payload: dict[str, Any] = {}
    expect: dict[str, Any] = {"badge": None, "user": None, "action": None, "naive": None}
    if draw(st.booleans()):
        payload["badge"], expect["badge"] = draw(badge_spellings())
    if expect["badge"] is None or draw(st.booleans()):
        payload["user"] = draw(identifiers)
        expect["user"] = str(payload["user"]).strip()
    if draw(st.booleans()):
        action = draw(st.sampled_from(list(Action)))
        payload["action"] = draw(st.sampled_from([action.value, action.value.upper()]))
        expect["action"] = action
    moment = draw(event_times)
    if draw(st.booleans()):  # with an offset: the instant is fixed
        aware = moment.replace(tzinfo=draw(offsets))
        payload["time"] = aware.isoformat()
        expect["utc"] = aware.astimezone(UTC)
    else:  # site-local wall time
        payload["time"] = moment.isoformat()
        expect["naive"] = moment
    if draw(st.booleans()):
        payload["id"] = draw(identifiers)
    payload.update(
        draw(st.dictionaries(st.sampled_from(["extra", "vendor", "x"]), valid_json_values))
    )
    return payload, expect
