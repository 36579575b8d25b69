"""The operator's repair and inspection commands: dead, rejected, unmapped, held, replay,
check-config.

Queues are prepared through the public Store API on real SQLite files; the commands run as an
operator runs them (`python -m bridge ...` in a subprocess), and what they changed is read back
through a separate sqlite3 connection. One test runs a command beside a live bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bridge.commands.table import format_table
from bridge.delivery import Result
from bridge.events import Action, ClockEvent
from bridge.routing import topic_matches
from bridge.store import Incoming, Rejection, Store
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import canonical, publish, running_bridge, settings_from, wait_until
from tests.harness import write_config as write_bridge_config
from tests.test_cli import child_env, cli, one_line, table_row, write_config

BERLIN = ZoneInfo("Europe/Berlin")
SINK = "go2clock"
TOPIC = "clockin/door-1/events"
# A Monday in winter (Berlin is UTC+1): 08:00 local is 07:00 UTC.
MORNING = datetime(2026, 11, 23, 8, 0, tzinfo=BERLIN).astimezone(UTC)
API_KEY = "repair-test-key-3c9d"


# --- helpers -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def opened(db: Path) -> AsyncIterator[Store]:
    async with Store.open(db, site_tz=BERLIN, window_seconds=60) as store:
        yield store


def swipe(n: int, *, badge: str | None = None, action: Action = Action.IN, minutes: int = 0):
    return ClockEvent(
        key=f"e{n}",
        terminal="door-1",
        badge=badge or f"B{n}",
        user=None,
        action=action,
        time=MORNING + timedelta(minutes=minutes or n),
        time_given=True,
    )


def everyone(event: ClockEvent) -> Mapping[str, str | None]:
    return {SINK: f"p-{event.badge}"}


async def settle_all(store: Store, sink: str, outcomes: list[Result]) -> list[int]:
    """Claim every due delivery of the sink and settle them in event order; their ids."""
    now = time.time()
    jobs = await store.claim(sink, limit=100, now=now)
    assert len(jobs) == len(outcomes)
    for job, result in zip(jobs, outcomes, strict=True):
        await store.settle(job, result, retry_at=now + 3600, now=now)
    return [job.delivery_id for job in jobs]


def config_for(tmp_path: Path, db: Path, **sections: Any) -> Path:
    config: dict[str, Any] = {
        "site": {"timezone": "Europe/Berlin"},
        "store": {"path": str(db)},
        "http": {"enabled": False},
    }
    config.update(sections)
    return write_config(tmp_path, config)


def go2clock_enabled() -> dict[str, Any]:
    return {"go2clock": {"enabled": True, "api_key": API_KEY, "base_url": "http://127.0.0.1:9"}}


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, params).fetchall()


def state_of(db: Path, delivery_id: int) -> str:
    return rows(db, "SELECT state FROM deliveries WHERE id = ?", (delivery_id,))[0][0]


def run_json(*args: str, cwd: Path, code: int = 0) -> Any:
    result = cli(*args, "--json", cwd=cwd)
    assert result.returncode == code, result.stderr + result.stdout
    return json.loads(result.stdout)


async def dead_queue(db: Path) -> list[int]:
    """Deliveries of e0..e4: delivered, dead, dead, pending (retrying), delivered."""
    async with opened(db) as store:
        await store.ingest(
            [Incoming(swipe(n), TOPIC) for n in range(5)], resolve=everyone, received_at=MORNING
        )
        return await settle_all(
            store,
            SINK,
            [
                Result.delivered(),
                Result.dead("Go2Clock Validation Error: userid"),
                Result.dead("HTTP 400: bad"),
                Result.retry("503"),
                Result.delivered(),
            ],
        )


# --- the table helper and topic matching (pure) --------------------------------------------


def test_table_aligns_columns_and_right_aligns_numbers() -> None:
    text = format_table(["name", "count"], [["a", 5], ["longer", 12345], ["c", None]])
    assert text.splitlines() == [
        "name    count",
        "a           5",
        "longer  12345",
        "c           -",
    ]


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("clockin/+/events", "clockin/door-1/events", True),
        ("clockin/+/events", "clockin/door-1/other", False),
        ("clockin/+/events", "clockin/a/b/events", False),
        ("tele/#", "tele/dev/SENSOR", True),
        ("$share/g/clockin/+/events", "clockin/x/events", True),
        ("site/+/punch", "clockin/door-1/events", False),
    ],
)
def test_topic_matching(pattern: str, topic: str, matches: bool) -> None:
    assert topic_matches(pattern, topic) is matches


# --- dead ----------------------------------------------------------------------------------


async def test_dead_list_shows_sink_event_person_action_time_attempts_error(
    tmp_path: Path,
) -> None:
    db = tmp_path / "queue.db"
    ids = await dead_queue(db)
    config = str(config_for(tmp_path, db))
    listed = run_json("dead", "list", "--config", config, cwd=tmp_path)
    assert [entry["id"] for entry in listed] == [ids[1], ids[2]]
    first = listed[0]
    assert (first["sink"], first["event_key"], first["person"], first["action"]) == (
        SINK,
        "e1",
        "p-B1",
        "in",
    )
    assert first["time"] == "2026-11-23T08:01:00+01:00"  # site-local
    assert first["attempts"] == 1
    assert first["last_error"] == "Go2Clock Validation Error: userid"

    table = cli("dead", "list", "--config", config, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header == ["id", "sink", "event", "person", "action", "time", "attempts", "last_error"]
    assert "HTTP 400: bad" in table.stdout

    shown = cli("dead", "show", str(ids[1]), "--config", config, cwd=tmp_path)
    assert shown.returncode == 0
    assert "Go2Clock Validation Error: userid" in shown.stdout
    assert cli("dead", "show", "999", "--config", config, cwd=tmp_path).returncode == 1
    # a delivery that is not dead is shown, but the exit says it is not what was asked for
    assert cli("dead", "show", str(ids[0]), "--config", config, cwd=tmp_path).returncode == 1


async def test_dead_retry_makes_it_claimable_again_with_its_error_kept(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    ids = await dead_queue(db)
    config = str(config_for(tmp_path, db))
    done = run_json("dead", "retry", str(ids[1]), "--config", config, cwd=tmp_path)
    assert done == {"retried": [ids[1]], "not_changed": {}}
    [(state, attempts, error, due)] = rows(
        db,
        "SELECT state, attempts, last_error, next_attempt_at FROM deliveries WHERE id = ?",
        (ids[1],),
    )
    assert (state, attempts, error) == ("pending", 0, "Go2Clock Validation Error: userid")
    assert due <= time.time()
    async with opened(db) as store:
        jobs = await store.claim(SINK, limit=10, now=time.time())
    assert ids[1] in {job.delivery_id for job in jobs}
    assert next(job for job in jobs if job.delivery_id == ids[1]).attempt == 1
    assert state_of(db, ids[2]) == "dead", "only the one asked for"


async def test_dead_retry_reports_ids_not_dead_and_changes_nothing_of_them(
    tmp_path: Path,
) -> None:
    db = tmp_path / "queue.db"
    ids = await dead_queue(db)
    config = str(config_for(tmp_path, db))
    result = run_json(
        "dead",
        "retry",
        str(ids[2]),
        str(ids[0]),
        "4242",
        "--config",
        config,
        cwd=tmp_path,
        code=1,
    )
    assert result["retried"] == [ids[2]]
    assert result["not_changed"] == {str(ids[0]): "delivered", "4242": None}
    assert state_of(db, ids[0]) == "delivered"
    text = cli("dead", "retry", str(ids[2]), "--config", config, cwd=tmp_path)
    assert text.returncode == 1
    assert f"delivery {ids[2]}: is pending, not dead" in text.stdout


async def test_dead_retry_all_of_one_sink(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    ids = await dead_queue(db)
    async with opened(db) as store:  # a dead delivery of another sink stays dead
        await store.ingest(
            [Incoming(swipe(9), TOPIC)],
            resolve=lambda event: {"mctime": "m-9"},
            received_at=MORNING,
        )
        [other] = await settle_all(store, "mctime", [Result.dead("refused")])
    config = str(config_for(tmp_path, db))
    done = run_json("dead", "retry", "--sink", SINK, "--config", config, cwd=tmp_path)
    assert done["retried"] == [ids[1], ids[2]]
    assert state_of(db, other) == "dead"
    usage = cli("dead", "retry", "--config", config, cwd=tmp_path)
    assert usage.returncode == 2, "neither ids nor --all/--sink"


async def test_drop_is_terminal_kept_and_shown_in_status(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    ids = await dead_queue(db)
    config = str(config_for(tmp_path, db))
    assert run_json("dead", "drop", str(ids[1]), "--config", config, cwd=tmp_path)["dropped"] == [
        ids[1]
    ]
    [(state, error)] = rows(db, "SELECT state, last_error FROM deliveries WHERE id = ?", (ids[1],))
    assert (state, error) == ("dropped", "Go2Clock Validation Error: userid")
    # terminal: not claimable, not retryable, not droppable again
    async with opened(db) as store:
        claimed = await store.claim(SINK, limit=10, now=time.time() + 7200)
    assert ids[1] not in {job.delivery_id for job in claimed}
    assert cli("dead", "retry", str(ids[1]), "--config", config, cwd=tmp_path).returncode == 1
    assert cli("dead", "drop", str(ids[1]), "--config", config, cwd=tmp_path).returncode == 1
    status = run_json("status", "--config", config, cwd=tmp_path)
    assert status["sinks"][SINK]["states"]["dropped"] == 1
    table = cli("status", "--config", config, cwd=tmp_path)
    assert table_row(table.stdout, SINK)["dropped"] == "1"
    assert table_row(table.stdout, SINK)["dead"] == "1"


async def test_guarded_moves_in_the_store_never_touch_rows_in_another_state(
    tmp_path: Path,
) -> None:
    db = tmp_path / "queue.db"
    ids = await dead_queue(db)
    async with opened(db) as store:
        moved = await store.move(ids, expect="dead", to="pending", reset_attempts=True)
        assert moved.changed == [ids[1], ids[2]]
        assert moved.refused == {ids[0]: "delivered", ids[3]: "pending", ids[4]: "delivered"}
        again = await store.move(ids[1:3], expect="dead", to="dropped")
        assert again.changed == []
    assert [state_of(db, i) for i in ids] == [
        "delivered",
        "pending",
        "pending",
        "pending",
        "delivered",
    ]


# --- rejected ------------------------------------------------------------------------------


PUNCH_TOPIC = "site/door-9/punch"


async def rejected_queue(db: Path) -> None:
    """Rejected: 1, 2 the same punch on a topic no subscription matched (sent twice; the
    second without an id, so only its time says it is the same), 3 a payload that is no JSON,
    4 a punch without an id or a time (keyed on the time it was first received)."""
    punch = {"id": "p-1", "badge": "B0007", "action": "in", "time": "2026-11-23T09:00:00"}
    resent = {k: v for k, v in punch.items() if k != "id"}
    untimed = {"badge": "B0008", "action": "out"}
    async with opened(db) as store:
        await store.ingest(
            [
                Rejection(
                    PUNCH_TOPIC,
                    "unknown",
                    json.dumps(punch).encode(),
                    "no subscription matches",
                    MORNING,
                ),
                Rejection(
                    PUNCH_TOPIC,
                    "unknown",
                    json.dumps(resent).encode(),
                    "no subscription matches",
                    MORNING + timedelta(seconds=5),
                ),
                Rejection(TOPIC, "canonical", b"{broken", "payload is not JSON", MORNING),
                Rejection(
                    PUNCH_TOPIC,
                    "unknown",
                    json.dumps(untimed).encode(),
                    "no subscription matches",
                    MORNING + timedelta(minutes=3),
                ),
            ],
            resolve=everyone,
            received_at=MORNING,
        )


def fixed_config(tmp_path: Path, db: Path) -> Path:
    """The config after the fix: the punch topic is subscribed, and a directory maps B0007."""
    directory = tmp_path / "directory.csv"
    directory.write_text("badge,userid,name\nB0007,1007,Ana\n", encoding="utf-8")
    return config_for(
        tmp_path,
        db,
        mqtt={"subscriptions": [{"topic": "clockin/+/events"}, {"topic": "site/+/punch"}]},
        directory={"path": str(directory)},
        sinks=go2clock_enabled(),
    )


async def test_rejected_list_and_show(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    await rejected_queue(db)
    config = str(config_for(tmp_path, db))
    listed = run_json("rejected", "list", "--config", config, cwd=tmp_path)
    assert [entry["id"] for entry in listed] == [4, 3, 2, 1], "newest first"
    assert listed[1]["reason"] == "payload is not JSON"
    assert listed[3]["received_at"] == "2026-11-23T08:00:00+01:00"
    shown = run_json("rejected", "show", "3", "--config", config, cwd=tmp_path)
    assert shown["payload"] == "{broken"
    assert cli("rejected", "show", "99", "--config", config, cwd=tmp_path).returncode == 1


async def test_reprocess_before_the_fix_reports_the_reason_and_changes_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "queue.db"
    await rejected_queue(db)
    config = str(config_for(tmp_path, db))
    result = run_json("rejected", "reprocess", "1", "--config", config, cwd=tmp_path, code=1)
    assert result["results"] == [
        {"id": 1, "topic": PUNCH_TOPIC, "result": "rejected", "reason": "no subscription matches"}
    ]
    assert rows(db, "SELECT COUNT(*) FROM events") == [(0,)]
    assert rows(db, "SELECT reprocessed_at FROM rejected WHERE id = 1") == [(None,)]


async def test_reprocess_after_the_fix_makes_each_punch_one_event_exactly_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "queue.db"
    await rejected_queue(db)
    config = str(fixed_config(tmp_path, db))
    first = run_json("rejected", "reprocess", "--all", "--config", config, cwd=tmp_path, code=1)
    by_id = {item["id"]: item for item in first["results"]}
    assert by_id[1]["result"] == "event"
    assert by_id[1]["status"] == "accepted"
    # the resend is the same punch: kept out by the duplicate layers, marked all the same
    assert by_id[2]["status"] == "duplicate"
    assert by_id[3]["result"] == "rejected"  # still no JSON: left, with the new reason
    assert by_id[3]["reason"].startswith("payload is not JSON")
    assert by_id[4]["status"] == "unmapped"  # B0008 is not in the directory (yet)

    events = rows(db, "SELECT key, badge, status, received_at, event_time FROM events ORDER BY id")
    assert [(e[0], e[1], e[2]) for e in events[:1]] == [("door-9/p-1", "B0007", "accepted")]
    assert len([e for e in events if e[2] != "duplicate"]) == 2
    untimed = events[-1]
    assert untimed[4] == "2026-11-23T07:03:00.000000Z", "no time: the time it was received"
    assert rows(db, "SELECT sink, person, state FROM deliveries WHERE event_id = 1") == [
        (SINK, "1007", "pending")
    ]
    marked = rows(db, "SELECT id, reprocessed_as FROM rejected WHERE reprocessed_at IS NOT NULL")
    assert dict(marked)[1] == "door-9/p-1"
    assert set(dict(marked)) == {1, 2, 4}
    assert rows(db, "SELECT COUNT(*) FROM rejected") == [(4,)], "nothing deleted"

    # twice: nothing new (the marked rows are skipped, the explicit id says it was done)
    again = run_json("rejected", "reprocess", "--all", "--config", config, cwd=tmp_path, code=1)
    assert [item["id"] for item in again["results"]] == [3]
    explicit = run_json("rejected", "reprocess", "1", "--config", config, cwd=tmp_path, code=1)
    assert explicit["results"][0]["result"] == "done_before"
    # and should a reprocess die between storing and marking, the store still holds it once
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE rejected SET reprocessed_at = NULL, reprocessed_as = NULL")
    third = run_json("rejected", "reprocess", "1", "4", "--config", config, cwd=tmp_path)
    assert [item["status"] for item in third["results"]] == ["redelivered", "redelivered"]
    assert rows(db, "SELECT COUNT(*) FROM events") == [(len(events),)]
    assert rows(db, "SELECT COUNT(*) FROM deliveries") == [(2,)]


async def test_reprocess_with_a_broken_directory_is_a_config_error(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    await rejected_queue(db)
    config = fixed_config(tmp_path, db)
    (tmp_path / "directory.csv").write_text("no header here\n", encoding="utf-8")
    result = cli("rejected", "reprocess", "--all", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "directory.path" in one_line(result.stderr)
    assert rows(db, "SELECT COUNT(*) FROM events") == [(0,)]


# --- unmapped ------------------------------------------------------------------------------


async def test_unmapped_list(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    async with opened(db) as store:
        await store.ingest(
            [
                Incoming(swipe(1, badge="B9", action=Action.IN, minutes=1), TOPIC),
                Incoming(swipe(2, badge="B1", action=Action.IN, minutes=2), TOPIC),
                Incoming(swipe(3, badge="B9", action=Action.OUT, minutes=300), TOPIC),
            ],
            resolve=lambda event: {SINK: None if event.badge == "B9" else "p-1", "mctime": None},
            received_at=MORNING,
        )
    config = str(config_for(tmp_path, db))
    listed = run_json("unmapped", "list", "--config", config, cwd=tmp_path)
    b9 = next(entry for entry in listed if entry["badge"] == "B9")
    assert b9["events"] == 2
    assert b9["first_seen"] == "2026-11-23T08:01:00+01:00"
    assert b9["last_seen"] == "2026-11-23T13:00:00+01:00"
    assert b9["sinks"] == ["go2clock", "mctime"]
    assert b9["inferred"] == 0  # both had a direction from the terminal
    b1 = next(entry for entry in listed if entry["badge"] == "B1")
    assert (b1["events"], b1["sinks"]) == (1, ["mctime"])
    table = cli("unmapped", "list", "--config", config, cwd=tmp_path).stdout
    assert table.splitlines()[0].split() == [
        "badge",
        "events",
        "inferred",
        "first_seen",
        "last_seen",
        "sinks",
    ]
    assert "go2clock,mctime" in table


# --- held ----------------------------------------------------------------------------------


OPEN_SINCE = MORNING - timedelta(days=2)  # a shift open for two days: longer than the max


async def held_queue(db: Path) -> list[int]:
    """TimeTrack: e1 (out, p-B1) held with a shift open for two days; e2 (out, p-B2) held
    without any shift; e3 delivered."""
    shift = {
        "shift": {
            "from": OPEN_SINCE.isoformat(),
            "break_minutes": 0,
            "break_from": None,
            "notes": [],
        }
    }
    async with opened(db) as store:
        await store.ingest(
            [Incoming(swipe(n, action=Action.OUT), TOPIC) for n in (1, 2, 3)],
            resolve=lambda event: {"timetrack": f"p-{event.badge}"},
            received_at=MORNING,
        )
        return await settle_all(
            store,
            "timetrack",
            [
                Result.held("out closes a shift open since ...", state=shift),
                Result.held("out with no open shift"),
                Result.delivered(),
            ],
        )


async def test_held_list(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    ids = await held_queue(db)
    config = str(config_for(tmp_path, db))
    listed = run_json("held", "list", "--config", config, cwd=tmp_path)
    assert [entry["id"] for entry in listed] == ids[:2]
    assert listed[0]["person_state"]["shift"]["from"] == OPEN_SINCE.isoformat()
    table = cli("held", "list", "--config", config, cwd=tmp_path).stdout
    assert "2026-11-21T08:00+01:00" in table  # the open shift's start, site-local


async def test_held_complete_closes_the_shift_and_requeues(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    ids = await held_queue(db)
    config = str(config_for(tmp_path, db))
    done = run_json(
        "held",
        "complete",
        str(ids[0]),
        "--to",
        "2026-11-21T17:00",
        "--config",
        config,
        cwd=tmp_path,
    )
    assert done["requeued"] == ids[0]
    # naive --to is site-local: 17:00 in Berlin is 16:00 UTC
    assert done["person_state"]["shift"]["to"] == "2026-11-21T16:00:00+00:00"
    [(saved,)] = rows(
        db, "SELECT state FROM person_state WHERE sink = 'timetrack' AND person = 'p-B1'"
    )
    assert json.loads(saved)["shift"]["to"] == "2026-11-21T16:00:00+00:00"
    assert state_of(db, ids[0]) == "pending"
    async with opened(db) as store:
        [job] = await store.claim("timetrack", limit=10, now=time.time())
    assert job.delivery_id == ids[0]
    assert job.state["shift"]["to"] == "2026-11-21T16:00:00+00:00"
    # a second complete: it is no longer held
    again = cli(
        "held",
        "complete",
        str(ids[0]),
        "--to",
        "2026-11-21T18:00",
        "--config",
        config,
        cwd=tmp_path,
    )
    assert again.returncode == 1
    assert "not held" in again.stderr


async def test_held_complete_from_opens_the_missing_shift(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    ids = await held_queue(db)
    config = str(config_for(tmp_path, db))
    done = run_json(
        "held",
        "complete",
        str(ids[1]),
        "--from",
        "2026-11-23T06:30:00+01:00",
        "--config",
        config,
        cwd=tmp_path,
    )
    assert done["person_state"]["shift"]["from"] == "2026-11-23T05:30:00+00:00"
    assert done["person_state"]["shift"]["operator"] is True
    assert state_of(db, ids[1]) == "pending"


async def test_held_complete_that_does_not_fit_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    ids = await held_queue(db)
    config = str(config_for(tmp_path, db))
    before = rows(db, "SELECT * FROM person_state")
    # an end before the shift's start
    early = cli(
        "held", "complete", str(ids[0]), "--to", "2026-11-20", "--config", config, cwd=tmp_path
    )
    assert early.returncode == 1
    assert "not after the shift's start" in early.stderr
    # no shift to complete
    none = cli(
        "held",
        "complete",
        str(ids[1]),
        "--to",
        "2026-11-23T17:00",
        "--config",
        config,
        cwd=tmp_path,
    )
    assert none.returncode == 1
    assert rows(db, "SELECT * FROM person_state") == before
    assert [state_of(db, i) for i in ids] == ["held", "held", "delivered"]
    bad_time = cli(
        "held", "complete", str(ids[0]), "--to", "yesterday", "--config", config, cwd=tmp_path
    )
    assert bad_time.returncode == 2
    assert (
        cli(
            "held", "complete", "4242", "--to", "2026-11-23", "--config", config, cwd=tmp_path
        ).returncode
        == 1
    )


async def test_held_drop(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    ids = await held_queue(db)
    config = str(config_for(tmp_path, db))
    done = run_json(
        "held", "drop", str(ids[1]), str(ids[2]), "--config", config, cwd=tmp_path, code=1
    )
    assert done["dropped"] == [ids[1]]
    assert done["not_changed"] == {str(ids[2]): "delivered"}
    assert state_of(db, ids[1]) == "dropped"


# --- replay --------------------------------------------------------------------------------


async def replay_queue(db: Path) -> list[int]:
    """e0..e7 at 08:00, 09:00, ... 15:00 Berlin on the 23rd, plus e8 on the 24th: all
    delivered except e3 (dead) and e5 (pending)."""
    events = [swipe(n, minutes=60 * n) for n in range(8)]
    events.append(swipe(8, minutes=60 * 24))
    async with opened(db) as store:
        await store.ingest(
            [Incoming(event, TOPIC) for event in events], resolve=everyone, received_at=MORNING
        )
        outcomes = [Result.delivered()] * 9
        outcomes[3], outcomes[5] = Result.dead("400"), Result.retry("503")
        return await settle_all(store, SINK, outcomes)


async def test_replay_requeues_exactly_the_delivered_deliveries_in_range(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    ids = await replay_queue(db)
    config = str(config_for(tmp_path, db))
    # 09:00 .. 13:00 local (naive: site-local; --until exclusive): e1, e2, e4 (e3 dead)
    done = run_json(
        "replay",
        "--sink",
        SINK,
        "--since",
        "2026-11-23T09:00",
        "--until",
        "2026-11-23T13:00",
        "--config",
        config,
        cwd=tmp_path,
    )
    assert done["replayed"] == [ids[1], ids[2], ids[4]]
    replayed = rows(db, "SELECT id, state, replayed FROM deliveries WHERE replayed > 0")
    assert replayed == [(ids[1], "pending", 1), (ids[2], "pending", 1), (ids[4], "pending", 1)]
    assert [state_of(db, i) for i in (ids[0], ids[3], ids[5], ids[6])] == [
        "delivered",
        "dead",
        "pending",
        "delivered",
    ]
    # they go out again, oldest first per person (each badge is its own person here)
    async with opened(db) as store:
        jobs = await store.claim(SINK, limit=10, now=time.time() + 1)
    assert {ids[1], ids[2], ids[4]} <= {job.delivery_id for job in jobs}


async def test_replay_by_dates_takes_whole_local_days(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    ids = await replay_queue(db)
    config = str(config_for(tmp_path, db))
    done = run_json(
        "replay",
        "--sink",
        SINK,
        "--since",
        "2026-11-23",
        "--until",
        "2026-11-23",
        "--config",
        config,
        cwd=tmp_path,
    )
    # the 23rd, local: e0..e7 except dead e3 and pending e5; not e8 on the 24th
    assert done["replayed"] == [ids[n] for n in (0, 1, 2, 4, 6, 7)]
    later = run_json(
        "replay", "--sink", SINK, "--since", "2026-11-24", "--config", config, cwd=tmp_path
    )
    assert later["replayed"] == [ids[8]]
    stateful = cli(
        "replay", "--sink", "mctime", "--since", "2026-11-23", "--config", config, cwd=tmp_path
    )
    assert stateful.returncode == 2  # McTime's clock state makes a resend unsafe
    assert "go2clock" in stateful.stderr
    bad = cli("replay", "--sink", SINK, "--since", "soon", "--config", config, cwd=tmp_path)
    assert bad.returncode == 2
    assert "ISO-8601" in one_line(bad.stderr)


# --- check-config --------------------------------------------------------------------------


def test_check_config_good(tmp_path: Path) -> None:
    directory = tmp_path / "directory.csv"
    directory.write_text("badge,userid,name\nB1,1001,Ana\nB2,1002,Ben\n", encoding="utf-8")
    config = config_for(
        tmp_path,
        tmp_path / "queue.db",
        sinks=go2clock_enabled(),
        directory={"path": str(directory)},
    )
    result = cli("check-config", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sinks enabled: go2clock" in result.stdout
    assert "subscription: clockin/+/events (canonical)" in result.stdout
    assert "2 people" in result.stdout
    assert str(tmp_path / "queue.db") in result.stdout
    assert API_KEY not in result.stdout
    summary = run_json("check-config", "--config", str(config), cwd=tmp_path)
    assert list(summary["sinks"]) == ["go2clock"]
    assert summary["directory"]["people"] == 2
    assert summary["database"] == {"path": str(tmp_path / "queue.db"), "exists": False}
    assert not (tmp_path / "queue.db").exists(), "a check creates no database"


@pytest.mark.parametrize(
    ("config", "name"),
    [
        ({"site": {"timezone": "Mars/Base"}}, "site.timezone"),
        ({"sinks": {"go2clock": {"enabled": True}}}, "api_key"),
        ({"directory": {"path": "/nowhere/directory.csv"}}, "directory.path"),
    ],
)
def test_check_config_bad_exits_2_like_run(
    tmp_path: Path, config: dict[str, Any], name: str
) -> None:
    path = write_config(tmp_path, config)
    result = cli("check-config", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    line = one_line(result.stderr)
    assert line.startswith("clockin-bridge: config error:")
    assert name in line
    assert result.stdout == ""


# --- every command: --json parses, a missing database is not created -----------------------


LISTS = [["dead", "list"], ["rejected", "list"], ["unmapped", "list"], ["held", "list"]]


@pytest.mark.parametrize("command", LISTS)
async def test_json_output_of_an_empty_queue_parses(tmp_path: Path, command: list[str]) -> None:
    db = tmp_path / "queue.db"
    async with opened(db):
        pass
    assert run_json(*command, "--config", str(config_for(tmp_path, db)), cwd=tmp_path) == []
    text = cli(*command, "--config", str(config_for(tmp_path, db)), cwd=tmp_path)
    assert text.returncode == 0
    assert text.stdout.startswith("no ")


@pytest.mark.parametrize("command", LISTS)
def test_without_a_database_nothing_is_created(tmp_path: Path, command: list[str]) -> None:
    db = tmp_path / "none" / "queue.db"
    result = cli(*command, "--config", str(config_for(tmp_path, db)), cwd=tmp_path)
    assert result.returncode == 1
    assert "no database" in one_line(result.stderr)
    assert not db.parent.exists()


# --- beside a running bridge ---------------------------------------------------------------


async def cli_async(*args: str, cwd: Path) -> tuple[int, str, str]:
    """The CLI in a subprocess without blocking the event loop the bridge runs on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        cwd=cwd,
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_dead_retry_beside_a_running_bridge_is_delivered_exactly_once(
    broker: Mosquitto, tmp_path: Path
) -> None:
    fake = FakeGo2Clock(api_key="test-go2clock-key-7f3a9c")  # tests.harness.API_KEY
    fake.invalid_userids = {"1003"}  # the vendor refuses this person: a dead delivery
    async with running_fake_go2clock(fake) as url:
        config = write_bridge_config(tmp_path, broker_port=broker.port, go2clock_url=url)
        settings = settings_from(config)
        db = settings.store.path
        async with running_bridge(settings):
            await publish(broker.port, [(TOPIC, canonical(n)) for n in (1, 2, 3)])
            await fake.wait_for_records(2, timeout=10)

            async def one_dead() -> bool:
                return rows(db, "SELECT COUNT(*) FROM deliveries WHERE state = 'dead'") == [(1,)]

            await wait_until(one_dead, timeout=10, what="the refused punch to be dead")
            [(dead_id,)] = rows(db, "SELECT id FROM deliveries WHERE state = 'dead'")
            fake.invalid_userids.clear()  # the vendor fixed the person

            code, out, err = await cli_async(
                "dead", "retry", str(dead_id), "--config", str(config), cwd=tmp_path
            )
            assert code == 0, err + out
            # nothing else happens in the bridge: it must notice the retried delivery itself
            started = time.monotonic()
            await fake.wait_for_records(3, timeout=15)
            picked_up_after = time.monotonic() - started

            async def delivered() -> bool:
                return state_of(db, dead_id) == "delivered"

            await wait_until(delivered, timeout=5, what="the retried delivery to settle")
            # a second retry of the same id is refused: it is no longer dead
            code, out, _ = await cli_async(
                "dead", "retry", str(dead_id), "--config", str(config), cwd=tmp_path
            )
            assert code == 1
            await asyncio.sleep(1.0)  # time for a wrong second send to show
    # Woken by the commit of the other process (Store.watch_other_writers), not by the
    # dispatcher's safety recheck a minute later.
    assert picked_up_after < 10
    punches = fake.punches_by_key()
    assert len(punches) == 3
    assert set(punches.values()) == {1}
    assert [r["userid"] for r in fake.records].count("1003") == 1
