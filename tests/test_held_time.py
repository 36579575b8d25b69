"""Events held for an implausible device time: the rules around `held complete ID
--use-received-time` (what is decided again at the received time, what is refused), `held
drop`, status, retention and `rejected reprocess`.

Queues are prepared through the public Store API on real SQLite files, as the router marks an
implausible time; the commands run as an operator runs them (`python -m bridge ...` in a
subprocess) and what they changed is read back through a separate sqlite3 connection. The end
to end flow through the broker is tests/test_implausible_time.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge.delivery import Result
from bridge.events import Action, ClockEvent, TimeLimits, implausible_time
from bridge.store import Incoming, Rejection, RetentionPolicy
from tests.test_cli import cli
from tests.test_repair import (
    MORNING,
    SINK,
    TOPIC,
    config_for,
    go2clock_enabled,
    opened,
    rows,
    run_json,
    state_of,
)

RECEIVED = MORNING + timedelta(hours=2)  # 10:00 in Berlin
FUTURE = datetime(2099, 1, 1, tzinfo=UTC)


def swipe(key: str, *, at: datetime, badge: str = "B1", action: Action | None = None):
    return ClockEvent(
        key=key,
        terminal="door-1",
        badge=badge,
        user=None,
        action=action,
        time=at,
        time_given=True,
    )


def arrived(event: ClockEvent, *, received_at: datetime = RECEIVED) -> Incoming:
    """The event as the router hands it over: held when its time is implausible."""
    held = implausible_time(event, received_at=received_at, limits=TimeLimits())
    return Incoming(event, TOPIC, held=held)


def two_sinks(event: ClockEvent) -> Mapping[str, str | None]:
    """Go2Clock knows everyone; TimeTrack not B9."""
    return {SINK: f"p-{event.badge}", "timetrack": None if event.badge == "B9" else "tt"}


async def store_at(db: Path, *events: ClockEvent, resolve: Any = two_sinks) -> None:
    async with opened(db) as store:
        for event in events:
            await store.ingest([arrived(event)], resolve=resolve, received_at=RECEIVED)


def held_ids(db: Path, key: str) -> list[int]:
    found = rows(
        db,
        "SELECT d.id FROM deliveries AS d JOIN events AS e ON e.id = d.event_id"
        " WHERE e.key = ? ORDER BY d.id",
        (key,),
    )
    return [row[0] for row in found]


def book(config: Path, delivery_id: int, *, code: int = 0) -> Any:
    return run_json(
        "held",
        "complete",
        str(delivery_id),
        "--use-received-time",
        "--config",
        str(config),
        cwd=config.parent,
        code=code,
    )


def both_sinks_config(tmp_path: Path, db: Path) -> Path:
    directory = tmp_path / "directory.csv"
    directory.write_text("badge,userid,name\nB1,1001,Ana\n", encoding="utf-8")
    sinks = {
        **go2clock_enabled(),
        "timetrack": {
            "enabled": True,
            "base_url": "http://127.0.0.1:9",
            "api_key": "tt-key",
            "api_secret": "tt-secret",
        },
    }
    return config_for(tmp_path, db, sinks=sinks, directory={"path": str(directory)})


async def test_held_event_is_stored_with_every_delivery_held_and_no_decision(
    tmp_path: Path,
) -> None:
    db = tmp_path / "queue.db"
    await store_at(db, swipe("far", at=FUTURE, badge="B9"))
    assert rows(db, "SELECT status, action, action_inferred, device_time FROM events") == [
        ("held", "in", 1, None)  # a placeholder action, to be inferred when booked
    ]
    assert rows(db, "SELECT sink, person, state, last_error FROM deliveries ORDER BY sink") == [
        (
            SINK,
            "p-B9",
            "held",
            (
                "implausible time: device said 2099-01-01T00:00:00Z,"
                " received 2026-11-23T09:00:00Z (more than 1 day ahead, site.max_future_seconds)"
            ),
        ),
        ("timetrack", None, "held", rows(db, "SELECT last_error FROM deliveries")[0][0]),
    ]
    config = config_for(tmp_path, db)
    shown = run_json(
        "held", "show", str(held_ids(db, "far")[0]), "--config", str(config), cwd=tmp_path
    )
    assert shown["time"] == "2099-01-01T01:00:00+01:00"  # the device's, site-local
    assert shown["received_at"] == "2026-11-23T10:00:00+01:00"
    assert shown["device_time"] is None  # not replaced (yet)
    async with opened(db) as store:
        assert await store.claim(SINK, limit=10, now=time.time() + 10**9) == []
        # a directory that learns the person does not release it either
        assert await store.release_unmapped(resolve=lambda _who: {"timetrack": "tt"}) == 0
        status = await store.status(now=time.time())
    assert status["events"] == {"held": 1}
    assert status["sinks"][SINK]["states"] == {"held": 1}


async def test_booking_infers_again_at_the_received_time_and_requeues_every_sink(
    tmp_path: Path,
) -> None:
    db = tmp_path / "queue.db"
    # 09:00 `in` (delivered), then a swipe without an action that the device dated 2099 but
    # the gateway received at 10:00, then one at 11:00 inferred while the 2099 one was held.
    await store_at(
        db,
        swipe("in-9", at=RECEIVED - timedelta(hours=1), action=Action.IN),
        swipe("far", at=FUTURE),
        swipe("at-11", at=RECEIVED + timedelta(hours=1)),
    )
    assert rows(db, "SELECT key, action, status FROM events ORDER BY id") == [
        ("in-9", "in", "accepted"),
        ("far", "in", "held"),
        ("at-11", "out", "accepted"),  # the held one is nobody's previous swipe
    ]
    config = both_sinks_config(tmp_path, db)
    go2clock, timetrack = held_ids(db, "far")
    booked = book(config, timetrack)
    assert booked["action"] == "out"  # the 09:00 `in` was open
    assert booked["action_inferred"] is True
    assert booked["event_time"] == "2026-11-23T10:00:00+01:00"
    assert booked["device_time"] == "2099-01-01T01:00:00+01:00"
    assert booked["requeued"] == [go2clock, timetrack]
    assert booked["later_inferred"] == 1
    assert rows(
        db,
        "SELECT action, event_time, local_day, status, device_time FROM events WHERE key = 'far'",
    ) == [
        (
            "out",
            "2026-11-23T09:00:00.000000Z",
            "2026-11-23",
            "accepted",
            "2099-01-01T00:00:00.000000Z",
        )
    ]
    assert [state_of(db, n) for n in (go2clock, timetrack)] == ["pending", "pending"]
    assert rows(
        db, "SELECT DISTINCT event_time FROM deliveries WHERE id IN (?, ?)", (go2clock, timetrack)
    ) == [("2026-11-23T09:00:00.000000Z",)]
    # the 11:00 swipe stays as it was decided: it may have been delivered
    assert rows(db, "SELECT action FROM events WHERE key = 'at-11'") == [("out",)]
    [(change, ids)] = rows(db, "SELECT change, deliveries FROM repairs")
    assert "booked at its received time 2026-11-23T09:00:00.000000Z" in change
    assert "the device said 2099-01-01T00:00:00.000000Z" in change
    assert json.loads(ids) == [go2clock, timetrack]
    sent = []
    async with opened(db) as store:  # the person's punches one at a time, oldest first
        while jobs := await store.claim(SINK, limit=10, now=time.time()):
            [job] = jobs
            sent.append((job.event_key, job.action, job.time))
            await store.settle(job, Result.delivered(), retry_at=0, now=time.time())
    assert sent == [
        ("in-9", Action.IN, RECEIVED - timedelta(hours=1)),
        ("far", Action.OUT, RECEIVED),
        ("at-11", Action.OUT, RECEIVED + timedelta(hours=1)),
    ]
    # once booked it is no longer held
    again = cli(
        "held",
        "complete",
        str(go2clock),
        "--use-received-time",
        "--config",
        str(config),
        cwd=tmp_path,
    )
    assert again.returncode == 1
    assert "is delivered, not held" in again.stderr


async def test_a_given_action_is_kept_and_an_unknown_person_waits_as_unmapped(
    tmp_path: Path,
) -> None:
    db = tmp_path / "queue.db"
    await store_at(
        db, swipe("old", at=datetime(1999, 6, 30, tzinfo=UTC), badge="B9", action=Action.OUT)
    )
    config = both_sinks_config(tmp_path, db)  # the directory does not know B9 either
    go2clock, timetrack = held_ids(db, "old")
    booked = book(config, go2clock)
    assert booked["action"] == "out"
    assert booked["action_inferred"] is False
    assert booked["requeued"] == [go2clock]
    assert booked["unmapped"] == [timetrack]
    assert booked["status"] == "unmapped"
    assert [state_of(db, n) for n in (go2clock, timetrack)] == ["pending", "unmapped"]
    async with opened(db) as store:  # and the directory releases it once it knows B9
        assert await store.release_unmapped(resolve=lambda _who: {"timetrack": "tt-9"}) == 1
    assert state_of(db, timetrack) == "pending"
    assert rows(db, "SELECT status FROM events") == [("accepted",)]


async def test_a_person_the_directory_learnt_meanwhile_is_requeued(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    await store_at(db, swipe("far", at=FUTURE), resolve=lambda _e: {SINK: None})
    config = both_sinks_config(tmp_path, db)  # the directory maps B1 to 1001 by now
    [go2clock] = held_ids(db, "far")
    booked = book(config, go2clock)
    assert booked["requeued"] == [go2clock]
    assert rows(db, "SELECT person, state FROM deliveries") == [("1001", "pending")]


async def test_a_double_swipe_at_the_received_time_is_dropped(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    await store_at(
        db,
        swipe("in-0959", at=RECEIVED - timedelta(seconds=30), action=Action.IN),
        swipe("far", at=FUTURE),  # inferred at 10:00: the same `in` again, 30 s later
    )
    config = both_sinks_config(tmp_path, db)
    ids = held_ids(db, "far")
    booked = book(config, ids[0])
    assert booked["status"] == "duplicate"
    assert booked["duplicate_of"] == "in-0959"
    assert booked["dropped"] == ids
    assert booked["requeued"] == []
    assert [state_of(db, n) for n in ids] == ["dropped", "dropped"]
    assert rows(db, "SELECT status, duplicate_of FROM events WHERE key = 'far'") == [
        ("duplicate", 1)
    ]


async def test_the_wrong_kind_of_complete_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "queue.db"
    await store_at(db, swipe("far", at=FUTURE))
    # a TimeTrack shift hold beside it
    async with opened(db) as store:
        await store.ingest(
            [Incoming(swipe("shift", at=MORNING, badge="B2", action=Action.OUT), TOPIC)],
            resolve=lambda _e: {"timetrack": "p-B2"},
            received_at=MORNING,
        )
        [job] = await store.claim("timetrack", limit=10, now=time.time())
        await store.settle(job, Result.held("out with no open shift"), retry_at=0, now=0)
    config = both_sinks_config(tmp_path, db)
    before = rows(db, "SELECT * FROM deliveries ORDER BY id")
    far = held_ids(db, "far")[0]
    to = cli(
        "held",
        "complete",
        str(far),
        "--to",
        "2026-11-23T17:00",
        "--config",
        str(config),
        cwd=tmp_path,
    )
    assert to.returncode == 1
    assert "held for its implausible device time" in to.stderr
    assert "--use-received-time" in to.stderr
    wrong = cli(
        "held",
        "complete",
        str(job.delivery_id),
        "--use-received-time",
        "--config",
        str(config),
        cwd=tmp_path,
    )
    assert wrong.returncode == 1
    assert "for the person's shift, not for its time" in wrong.stderr
    assert (
        cli(
            "held", "complete", "4242", "--use-received-time", "--config", str(config), cwd=tmp_path
        ).returncode
        == 1
    )
    assert rows(db, "SELECT * FROM deliveries ORDER BY id") == before
    assert rows(db, "SELECT COUNT(*) FROM repairs") == [(0,)]


async def test_drop_status_and_retention_of_held_events(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    await store_at(db, swipe("far", at=FUTURE), swipe("old", at=datetime(1970, 1, 1, tzinfo=UTC)))
    config = config_for(tmp_path, db)
    shown = run_json("status", "--config", str(config), cwd=tmp_path)
    assert shown["events"] == {"held": 2}
    policy = RetentionPolicy(retain_days=1, dedupe_days=1, rejected_retain_days=1)
    later = RECEIVED.timestamp() + 30 * 86400
    async with opened(db) as store:
        # a 1970 time is no reason to prune, a 2099 one no reason to keep: held is kept
        assert (await store.prune(policy, now=later)).events == 0
    far = held_ids(db, "far")
    dropped = run_json("held", "drop", *map(str, far), "--config", str(config), cwd=tmp_path)
    assert dropped["dropped"] == far
    async with opened(db) as store:
        report = await store.prune(policy, now=time.time() + 30 * 86400)
    assert report.events == 1  # the dropped one, by its received time
    assert rows(db, "SELECT key FROM events") == [("old",)]
    async with opened(db) as store:  # and a resend of it is still a duplicate
        [stored] = await store.ingest(
            [arrived(swipe("far", at=FUTURE))], resolve=two_sinks, received_at=RECEIVED
        )
    assert stored.status == "redelivered"


async def test_reprocess_of_a_payload_rejected_for_its_time_stores_it_held(
    tmp_path: Path,
) -> None:
    """Before this release such a time was rejected: reprocess turns the row into a held event."""
    db = tmp_path / "queue.db"
    payload = json.dumps(
        {"id": "r1", "badge": "B1", "action": "in", "time": "1970-01-01T00:00:00Z"}
    )
    async with opened(db) as store:
        await store.ingest(
            [Rejection(TOPIC, "canonical", payload.encode(), "device time ... is before", MORNING)],
            resolve=two_sinks,
            received_at=MORNING,
        )
    config = both_sinks_config(tmp_path, db)
    result = cli("rejected", "reprocess", "1", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(held); its device time is implausible: see held list" in result.stdout
    listed = run_json("held", "list", "--config", str(config), cwd=tmp_path)
    assert [entry["event_key"] for entry in listed] == ["door-1/r1"] * 2
    assert "received 2026-11-23T07:00:00Z" in listed[0]["last_error"]
