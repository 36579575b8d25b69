"""Store.status() comes from counters the triggers of migration 8 keep, not from table scans:
after any sequence of writes (ingest, claim, settle, unclaim, admin moves, replay, release,
recovery, pruning) the counters equal a full recount of the tables. Real SQLite files."""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from bridge.delivery import Result
from bridge.events import Action
from bridge.store import Incoming, QueueStatus, Rejection, RetentionPolicy, Store
from bridge.store.connection import _split_sql
from bridge.store.records import Identified
from bridge.store.schema import MIGRATIONS
from tests.test_store import BERLIN, MORNING, opened, pragma, swipe

SINKS = ("go2clock", "mctime")
TOPIC = "clockin/door-1/events"


def recount(path: Path) -> dict[str, Any]:
    """What status reports, counted from the tables themselves (GROUP BY over everything)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        sinks: dict[str, dict[str, int]] = {}
        for sink, state, n in db.execute(
            "SELECT sink, state, COUNT(*) FROM deliveries GROUP BY sink, state"
        ):
            sinks.setdefault(sink, {})[state] = n
        oldest = dict(
            db.execute(
                "SELECT sink, MIN(created_at) FROM deliveries"
                " WHERE state IN ('pending', 'inflight') GROUP BY sink"
            ).fetchall()
        )
        return {
            "events": dict(db.execute("SELECT status, COUNT(*) FROM events GROUP BY status")),
            "sinks": sinks,
            "oldest": oldest,
            "retried": db.execute("SELECT COUNT(*) FROM deliveries WHERE attempts > 1").fetchone()[
                0
            ],
            "rejected": db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0],
            "inferred": db.execute("SELECT COUNT(*) FROM events WHERE action_inferred").fetchone()[
                0
            ],
        }


def as_recount(status: QueueStatus, now: float) -> dict[str, Any]:
    return {
        "events": status["events"],
        "sinks": {sink: dict(queue["states"]) for sink, queue in status["sinks"].items()},
        "oldest": {
            sink: pytest.approx(now - queue["oldest_pending_seconds"])
            for sink, queue in status["sinks"].items()
            if queue["oldest_pending_seconds"] is not None
        },
        "retried": status["retried"],
        "rejected": status["rejected"],
        "inferred": status["inferred"],
    }


async def assert_counters_agree(store: Store, path: Path) -> None:
    now = time.time()
    assert as_recount(await store.status(now=now), now) == recount(path)


def resolver(known: Mapping[str, bool]) -> Any:
    def resolve(event: Identified) -> Mapping[str, str | None]:
        person = f"p-{event.badge}" if known.get(event.badge or "", True) else None
        return dict.fromkeys(SINKS, person)

    return resolve


class Step(NamedTuple):
    store: Store
    rng: random.Random
    number: int
    known: dict[str, bool]
    sink: str
    now: float


async def ingest_some(step: Step) -> None:
    rng, batch = step.rng, list[Incoming | Rejection]()
    for n in range(rng.randint(1, 6)):
        if rng.random() < 0.1:
            junk = Rejection(
                topic=TOPIC, format="json", payload=b"junk", reason="bad", received_at=MORNING
            )
            batch.append(junk)
            continue
        at = MORNING + timedelta(minutes=rng.choice([step.number * 7 + n, step.number * 7]))
        key = f"k{rng.randint(0, step.number + 3)}" if rng.random() < 0.2 else f"s{step.number}-{n}"
        event = swipe(key, at, badge=f"B{rng.randint(0, 5)}", action=rng.choice(ACTIONS))
        batch.append(Incoming(event, TOPIC))
    await step.store.ingest(batch, resolve=resolver(step.known), received_at=datetime.now(UTC))


async def claim_and_settle(step: Step) -> None:
    for job in await step.store.claim(step.sink, limit=step.rng.randint(1, 5), now=step.now + 1000):
        result = step.rng.choice(RESULTS)
        retry_at = step.now + step.rng.choice([0, 5, 500])
        await step.store.settle(job, result, retry_at=retry_at, now=step.now)


async def claim_only(step: Step) -> None:
    await step.store.claim(step.sink, limit=step.rng.randint(1, 5), now=step.now + 1000)


async def unclaim(step: Step) -> None:
    await step.store.unclaim(await step.store.claim(step.sink, limit=3, now=step.now + 1000))


async def retry_or_drop_dead(step: Step) -> None:
    ids = await step.store.ids_in("dead", sink=step.sink)
    to = step.rng.choice(["pending", "dropped"])
    await step.store.move(ids[:3], expect="dead", to=to, reset_attempts=step.rng.random() < 0.5)


async def replay(step: Step) -> None:
    delivered = await step.store.ids_in("delivered", sink=step.sink)
    await step.store.replay(delivered[:2], now=step.now)


async def release(step: Step) -> None:
    step.known.update(dict.fromkeys(step.known, True))
    await step.store.release_unmapped(resolve=resolver(step.known))


async def recover(step: Step) -> None:
    await step.store.recover_inflight()


async def prune(step: Step) -> None:
    policy = RetentionPolicy(retain_days=2, dedupe_days=60, rejected_retain_days=1)
    await step.store.prune(policy, now=step.now + 3 * 86400)


ACTIONS = [Action.IN, Action.OUT, None]
RESULTS = [
    Result.delivered(),
    Result.duplicate(),
    Result.retry("busy"),
    Result.dead("refused"),
    Result.held("no shift"),
    Result.paused("key refused"),
]
STEPS: list[Callable[[Step], Awaitable[None]]] = [
    ingest_some,
    ingest_some,
    ingest_some,
    claim_and_settle,
    claim_and_settle,
    claim_only,
    unclaim,
    retry_or_drop_dead,
    replay,
    release,
    recover,
    prune,
]


async def random_step(
    store: Store, rng: random.Random, number: int, known: dict[str, bool]
) -> None:
    """One write of a random kind, with random arguments."""
    step = Step(store, rng, number, known, rng.choice(SINKS), time.time())
    await rng.choice(STEPS)(step)


@pytest.mark.parametrize("seed", range(6))
async def test_counters_equal_a_recount_after_random_operations(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "bridge.db"
    known = {"B4": False, "B5": False}  # unmapped until a release
    async with opened(path) as store:
        for step in range(60):
            await random_step(store, rng, step, known)
            if step % 10 == 9:
                await assert_counters_agree(store, path)
        await assert_counters_agree(store, path)
    # And after reopening (admin and read-only roles read the same counters).
    async with opened(path) as store:
        await assert_counters_agree(store, path)


async def test_the_migration_fills_the_counters_of_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        for script in MIGRATIONS[:7]:
            for statement in _split_sql(script):
                db.execute(statement)
        db.execute("PRAGMA user_version = 7")
        for n in range(20):
            db.execute(
                "INSERT INTO events (key, terminal, subject, badge, action, action_inferred,"
                " event_time, local_day, time_given, received_at, status, topic)"
                " VALUES (?, 't', 'badge:B', 'B', 'in', 0, ?, '2026-11-23', 1, ?, ?, ?)",
                (
                    f"e{n}",
                    f"2026-11-23T07:{n:02d}:00.000000Z",
                    "2026-11-23T07:00:00.000000Z",
                    "duplicate" if n % 5 == 0 else "accepted",
                    TOPIC,
                ),
            )
            for sink in SINKS[: 1 + n % 2]:
                db.execute(
                    "INSERT INTO deliveries (event_id, sink, person, event_time, state, attempts,"
                    " next_attempt_at, created_at) VALUES (?, ?, 'p', '', ?, ?, 0, ?)",
                    (n + 1, sink, ["pending", "delivered", "dead"][n % 3], n % 4, 1000.0 + n),
                )
        db.execute(
            "INSERT INTO rejected (received_at, topic, format, payload, payload_size, reason)"
            " VALUES ('2026-11-23T07:00:00.000000Z', 't', 'json', x'00', 1, 'bad')"
        )
        db.commit()
    expected = recount(path)
    async with Store.open(path, site_tz=BERLIN) as store:
        now = time.time()
        assert as_recount(await store.status(now=now), now) == expected
        # the database keeps its auto_vacuum (NONE): free pages are reused, not returned
        assert await pragma(store, "auto_vacuum") == 0
