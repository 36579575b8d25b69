"""Property: whatever the terminals send, ingest stores, rejects or ignores each message, and
never raises anything but the store's own write error.

The messages go through `Ingest.store_batch`, the code the MQTT loop runs for every batch,
into a real SQLite file; only the broker is left out (Hypothesis makes thousands of batches).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiomqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.config import MqttConfig, Subscription
from bridge.events import ClockEvent, PayloadFormat
from bridge.ingest import Ingest
from bridge.ingest.feedback import Feedback
from bridge.ingest.junk import JunkLimiter
from bridge.ops.metrics import Metrics
from bridge.store import Store, Stored
from tests.strategies import canonical_shaped, fuzz_settings, tasmota_shaped, to_bytes

SITE = ZoneInfo("Europe/Berlin")

# What a broker delivers: any UTF-8 topic level without wildcards or NUL (MQTT forbids those
# in a published topic), long or short, with controls, '$', bidi marks and the like.
levels = st.text(
    alphabet=st.characters(blacklist_characters="/+#\x00", blacklist_categories=["Cs"]),
    min_size=0,
    max_size=80,
) | st.just("x" * 60_000)
topics = st.one_of(
    levels.map(lambda level: f"clockin/{level}/events"),
    levels.map(lambda level: f"tele/{level}/SENSOR"),
    st.just("clockin/gate1/events"),
    st.just("somewhere/else"),
)
extreme_times = st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat)
swipes = st.fixed_dictionaries(
    {"badge": st.sampled_from(["B0001", "B0002", "04:A1:B2"])},
    optional={
        "time": extreme_times,
        "action": st.sampled_from(["in", "out", "break_start", "IN", "sideways"]),
        "terminal": levels,
        "note": st.text(max_size=40),
        "id": st.integers(min_value=0, max_value=5),
    },
)
payloads = st.one_of(
    st.binary(max_size=64),
    canonical_shaped.map(to_bytes),
    tasmota_shaped.map(to_bytes),
    swipes.map(to_bytes),
    st.just(b"x" * (16 * 1024 + 1)),
)
batches = st.lists(st.tuples(topics, payloads), min_size=1, max_size=8)


def _resolve(event: ClockEvent) -> Mapping[str, str | None]:
    return {"go2clock": "1001" if event.badge == "B0001" else None}


class _Harness:
    """A store and an Ingest on one event loop, kept across Hypothesis examples."""

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.path = path
        self._store_cm = Store.open(path, site_tz=SITE)
        store = self.loop.run_until_complete(self._store_cm.__aenter__())
        config = MqttConfig(
            subscriptions=[
                Subscription(topic="clockin/+/events"),
                Subscription(topic="tele/+/SENSOR", format=PayloadFormat.TASMOTA),
            ]
        )
        self.ingest = Ingest(
            config=config,
            store=store,
            resolve=_resolve,
            site_tz=SITE,
            max_batch=500,
            feedback=Feedback(ack_topic=config.ack_topic),
            metrics=Metrics(),
            # Everything kept, so that every rejected message shows as a row to count.
            junk=JunkLimiter(per_terminal=10**9, total=10**9),
        )

    def rows(self, table: str) -> int:
        with sqlite3.connect(self.path) as db:
            return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def close(self) -> None:
        self.loop.run_until_complete(self._store_cm.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Harness]:
    made = _Harness(tmp_path_factory.mktemp("ingest") / "bridge.db")
    yield made
    made.close()


def _message(topic: str, payload: bytes, mid: int) -> aiomqtt.Message:
    return aiomqtt.Message(topic, payload, qos=1, retain=False, mid=mid, properties=None)


@fuzz_settings
@given(batch=batches)
def test_every_message_is_stored_rejected_or_ignored(
    harness: _Harness, batch: list[tuple[str, bytes]]
) -> None:
    ingest = harness.ingest
    counts_before = dict(ingest.counts)
    events_before, rejected_before = harness.rows("events"), harness.rows("rejected")
    messages = [_message(topic, payload, n + 1) for n, (topic, payload) in enumerate(batch)]

    results: list[Stored] = harness.loop.run_until_complete(ingest.store_batch(messages))

    counted = {key: ingest.counts[key] - counts_before.get(key, 0) for key in ingest.counts}
    # stored + rejected + ignored (+ junk beyond the limits, none here) = received
    assert sum(counted.values()) == len(batch)
    assert counted.get("not_kept", 0) == 0
    assert len(results) == counted.get("stored", 0) + counted.get("rejected", 0)
    # ... and the database agrees: a row for every new event and every rejected message.
    statuses = [stored.status for stored in results]
    new_events = sum(status in ("accepted", "unmapped", "duplicate", "held") for status in statuses)
    assert harness.rows("events") - events_before == new_events
    assert harness.rows("rejected") - rejected_before == statuses.count("rejected")


def test_a_swipe_among_poison_is_stored(harness: _Harness) -> None:
    """The concrete case behind the property: the batch that used to stop ingest for good."""
    poison = json.dumps({"badge": "B0002", "time": "9999-12-31T23:59:30+00:00"}).encode()
    valid = json.dumps({"id": "ok-1", "badge": "C0FFEE", "action": "in"}).encode()
    wildcard = json.dumps({"badge": "B0002", "terminal": "#"}).encode()
    messages = [
        _message("clockin/gate1/events", poison, 1),
        _message("clockin/gate1/events", wildcard, 2),
        _message("clockin/gate1/events", valid, 3),
    ]
    results = harness.loop.run_until_complete(harness.ingest.store_batch(messages))
    assert [stored.status for stored in results] == ["rejected", "rejected", "unmapped"]
