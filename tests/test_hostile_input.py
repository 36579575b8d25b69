"""Hostile input at the MQTT level: a poison message is rejected and kept, the bridge carries
on, and the valid swipe sent right behind it is delivered exactly once.

Real parts: mosquitto, the bridge in this process, its SQLite file, the fake Go2Clock.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bridge.app import Bridge
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import (
    API_KEY,
    canonical,
    publish,
    running_bridge,
    settings_from,
    write_config,
)

TOPIC = "clockin/gate1/events"
VALID = canonical(1)  # badge B0001 -> user 1001


def _swipe(**fields: Any) -> bytes:
    return json.dumps({"badge": "B0002", "action": "in", **fields}).encode()


# (what is sent, on which topic, what the rejected row's reason says)
# (An implausible device time is no poison: it is stored and held, tests/test_implausible_time.)
POISON = {
    "wildcard terminal #": (_swipe(terminal="#"), TOPIC, "'#' is not the topic's terminal"),
    "wildcard terminal +": (_swipe(terminal="+"), TOPIC, "'+' is not the topic's terminal"),
    "terminal with a slash": (_swipe(terminal="gate2/ack"), TOPIC, "is not the topic's"),
    "another terminal's id": (_swipe(terminal="gate2"), TOPIC, "'gate2' is not the topic's"),
    "$ in the topic level": (_swipe(), "clockin/$SYS/events", "has one of / + # $"),
    "60 KB topic level": (_swipe(), f"clockin/{'x' * 60_000}/events", "longer than 64"),
    "NUL in the badge": (_swipe(badge="B00\x0002"), TOPIC, "non-printable"),
    "escape sequence in the note": (_swipe(note="\x1b[2J\x1b]0;owned\x07"), TOPIC, "control"),
    "bidi override in the user": (
        json.dumps({"user": "10\u202e01", "action": "in"}).encode(),
        TOPIC,
        "non-printable",
    ),
    "16 KiB + 1 payload": (
        json.dumps({"badge": "B0002", "pad": "x" * (16 * 1024)}).encode()[: 16 * 1024 + 1],
        TOPIC,
        "larger than the 16 KiB limit",
    ),
}


def _rejected(db: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT topic, reason, payload_size FROM rejected").fetchall()


def _events(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT terminal, key FROM events").fetchall()


async def _poison_then_valid(
    broker: Mosquitto, tmp_path: Path, poison: tuple[bytes, str, str], extra: dict[str, Any]
) -> tuple[Path, FakeGo2Clock, Bridge]:
    payload, topic, _reason = poison
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        config = write_config(tmp_path, broker_port=broker.port, go2clock_url=url, extra=extra)
        settings = settings_from(config)
        async with running_bridge(settings) as bridge:
            # One publisher, in order: both usually share one ingest batch.
            await publish(broker.port, [(topic, payload), (TOPIC, VALID)])
            await fake.wait_for_records(1, timeout=15)
            await asyncio.sleep(0.3)  # room for a second, wrong, delivery to show
            assert bridge.ingest is not None
            assert bridge.ingest.connected.is_set(), "the bridge lost its broker connection"
    return settings.store.path, fake, bridge


@pytest.mark.parametrize("name", list(POISON))
async def test_poison_message_is_rejected_and_the_next_swipe_delivered_once(
    broker: Mosquitto, tmp_path: Path, name: str
):
    db, fake, _bridge = await _poison_then_valid(broker, tmp_path, POISON[name], {})
    assert len(fake.records) == 1
    assert fake.records[0]["userid"] == "1001"
    rejected = _rejected(db)
    assert len(rejected) == 1, rejected
    topic, reason, size = rejected[0]
    assert POISON[name][2] in reason
    assert size == len(POISON[name][0])
    assert len(topic) <= 1100  # a 60 KB topic is not stored whole
    assert [terminal for terminal, _key in _events(db)] == ["gate1"]


@pytest.mark.parametrize("time", ["9999-12-31T23:59:30+00:00", "0001-01-01T00:00:10+00:00"])
async def test_a_value_the_store_cannot_handle_rejects_only_its_own_message(
    broker: Mosquitto, tmp_path: Path, time: str
):
    """With the time limits opened wide, the edge of the calendar reaches the store's
    arithmetic (local day, double-swipe window): that message alone becomes a rejected row."""
    wide = {"site": {"min_event_time": "0001-01-01T00:00:00Z", "max_future_seconds": 1e12}}
    poison = (_swipe(time=time), TOPIC, "could not be")
    db, fake, _bridge = await _poison_then_valid(broker, tmp_path, poison, wide)
    assert len(fake.records) == 1
    (rejected,) = _rejected(db)
    assert "could not be" in rejected[1], rejected
    assert "OverflowError" in rejected[1]
    assert len(_events(db)) == 1


async def test_a_wildcard_terminal_gets_no_feedback_and_others_still_do(
    broker: Mosquitto, tmp_path: Path
):
    """Feedback goes to clockin/<terminal>/ack: a '#' there would be no topic at all."""
    import aiomqtt

    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        settings = settings_from(write_config(tmp_path, broker_port=broker.port, go2clock_url=url))
        async with (
            running_bridge(settings),
            aiomqtt.Client("127.0.0.1", broker.port, identifier="listener") as listener,
        ):
            await listener.subscribe("clockin/+/ack", qos=1)
            await publish(broker.port, [(TOPIC, _swipe(terminal="#")), (TOPIC, VALID)])
            acks: list[tuple[str, dict[str, Any]]] = []
            async with asyncio.timeout(10):
                async for message in listener.messages:
                    body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                    acks.append((message.topic.value, body))
                    if body["status"] == "accepted":
                        break
            await fake.wait_for_records(1, timeout=10)
    # The rejected one is answered on its topic's terminal, never on a '#' topic.
    assert acks[0] == (
        "clockin/gate1/ack",
        {
            "id": None,
            "status": "rejected",
            "person": None,
            "action": None,
            "reason": acks[0][1]["reason"],
        },
    )
    assert "'#' is not the topic's terminal" in acks[0][1]["reason"]
    assert acks[-1][0] == "clockin/gate1/ack"


def test_reprocess_applies_the_daemons_time_limits() -> None:
    """`rejected reprocess` parses again with the same rules: a 1970 clock is held, with the
    time it was first received."""
    from bridge.commands.rejected import reparse
    from bridge.config import load_settings

    payload = _swipe(time="1970-01-01T00:00:00Z")
    row = {
        "topic": TOPIC,
        "payload": payload,
        "payload_size": len(payload),
        "received_at": "2026-11-23T07:00:00.000000Z",
    }
    incoming = reparse(row, load_settings(None))
    assert not isinstance(incoming, str)
    assert incoming.held is not None
    assert incoming.held.reason == (
        "implausible time: device said 1970-01-01T00:00:00Z, received 2026-11-23T07:00:00Z"
        " (before 2000-01-01T00:00:00Z, site.min_event_time)"
    )
