"""The operator commands' half of the store contract (issue 16): every read and guarded change
the commands make (dead, held, replay, rejected, unmapped, reconcile), against the SQLite store
and the PostgreSQL store, with the same results: the same dict keys, times as the SQLite
store's UTC text. Where the backends differ by design, the test says how:

- the repair trace: on SQLite the daemon reads it with bridge.store.repairs functions on its
  connection; on PostgreSQL it is a method of the store;
- the cap on rejected payloads: on SQLite an option of `Store.open`, on PostgreSQL
  `set_rejected_cap` (the daemon calls it at start); the counts: `status()` and
  `rejected_counts()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.delivery import EventStatus, Result
from bridge.events import Action, ClockEvent
from bridge.store import Incoming, Rejection, utc_text
from bridge.store.rejected import PAYLOAD_KEPT, footprint
from bridge.store.repairs import last_repair_id, repairs_after
from tests.test_store_contract import (
    MORNING,
    SINK,
    Backend,
    backend,
    claim,
    deliver,
    ingest,
    swipe,
)

__all__ = ["backend"]  # the fixture, imported to run these tests on both backends

NOW = time.time()


async def _settled(store: Any, outcome: Result, *, sink: str = SINK) -> int:
    """Claim the sink's next delivery and settle it so; its id."""
    [job] = (await claim(store, sink=sink, limit=1)).jobs
    await store.settle(job, outcome, retry_at=NOW + 3600, now=NOW)
    return int(job.delivery_id)


async def _repairs(backend: Backend, store: Any, after: int = 0) -> list[dict[str, Any]]:
    if backend.name == "sqlite":
        return await repairs_after(store._db, after)
    return list(await store.repairs_after(after))


async def _last_repair(backend: Backend, store: Any) -> int:
    if backend.name == "sqlite":
        return await last_repair_id(store._db)
    return int(await store.last_repair_id())


# --- dead deliveries -------------------------------------------------------------------------


async def test_dead_to_pending_moves_only_what_is_dead(backend: Backend) -> None:
    async with backend.open() as store:
        await ingest(store, swipe("a", MORNING, badge="B1"), swipe("b", MORNING, badge="B2"))
        dead = await _settled(store, Result.dead("422 unknown person"))
        delivered = await _settled(store, Result.delivered())
        assert await store.ids_in("dead", sink=SINK) == [dead]
        assert await store.ids_in("dead", sink="mctime") == []

        moved = await store.move(
            [dead, delivered, 999_999], expect="dead", to="pending", reset_attempts=True, now=NOW
        )

        assert moved.changed == [dead]
        assert moved.refused == {delivered: "delivered", 999_999: None}
        row = await store.delivery(dead)
        assert (row["state"], row["attempts"], row["next_attempt_at"]) == ("pending", 0, NOW)
        assert row["last_error"] == "422 unknown person"  # kept as history
        [again] = (await claim(store)).jobs
        assert (again.delivery_id, again.attempt) == (dead, 1)
        # Moving it again is refused: it is in flight now, not dead.
        assert (await store.move([dead], expect="dead", to="dropped")).refused == {dead: "inflight"}


async def test_a_delivery_row_reads_as_on_sqlite(backend: Backend) -> None:
    async with backend.open() as store:
        await ingest(store, swipe("a", MORNING, action=None))
        dead = await _settled(store, Result.dead("422"))
        [row] = await store.deliveries_in("dead")
        assert row == await store.delivery(dead)
        created = row.pop("created_at")
        assert isinstance(created, float)
        assert abs(created - time.time()) < 60
        received = row.pop("received_at")
        assert isinstance(received, str)
        assert received.endswith("Z")  # the same UTC text on both
        assert row == {
            "id": dead,
            "sink": SINK,
            "state": "dead",
            "person": "g-B1",
            "attempts": 1,
            "last_error": "422",
            "outcome": None,
            "replayed": 0,
            "next_attempt_at": row["next_attempt_at"],
            "settled_at": NOW,
            "event_key": "a",
            "terminal": "door-1",
            "badge": "B1",
            "user_id": None,
            "action": "in",
            "action_inferred": 1,
            "event_time": utc_text(MORNING),
            "event_status": "accepted",
            "device_time": None,
        }
        assert type(row["action_inferred"]) is int  # 0/1 as SQLite keeps it: JSON prints 1
        assert await store.delivery(999_999) is None
        assert await store.deliveries_in("dead", sink="mctime") == []
        assert await store.deliveries_in("pending", limit=1) != []


# --- held deliveries -------------------------------------------------------------------------


async def _held_late_punch(store: Any) -> int:
    """A late punch held at McTime, which had applied the person's later one."""
    await ingest(store, swipe("in", MORNING), swipe("out", MORNING + timedelta(hours=8)))
    for _ in range(2):
        for job in (await claim(store, sink="mctime", hold_late=True)).jobs:
            await deliver(store, job)
    await ingest(store, swipe("late", MORNING + timedelta(hours=4), action=Action.BREAK_START))
    [(job, _)] = (await claim(store, sink="mctime", hold_late=True)).late
    return int(job.delivery_id)


async def test_a_released_late_punch_goes_out_of_order(backend: Backend) -> None:
    async with backend.open() as store:
        held = await _held_late_punch(store)
        assert await store.ids_in("held") == [held]

        moved = await store.release_held([held], now=NOW)

        assert (moved.changed, moved.refused) == ([held], {})
        [job] = (await claim(store, sink="mctime", hold_late=True)).jobs  # not held again
        assert job.delivery_id == held
        assert (await store.release_held([held], now=NOW)).refused == {held: "inflight"}


async def test_a_held_delivery_is_dropped_and_kept(backend: Backend) -> None:
    async with backend.open() as store:
        held = await _held_late_punch(store)
        moved = await store.move([held], expect="held", to="dropped", now=NOW)
        assert moved.changed == [held]
        row = await store.delivery(held)
        assert (row["state"], row["settled_at"]) == ("dropped", NOW)
        assert (await claim(store, sink="mctime")).jobs == []


async def test_completing_a_held_shift_saves_the_state_and_requeues(backend: Backend) -> None:
    async with backend.open() as store:
        await ingest(store, swipe("out", MORNING, action=Action.OUT))
        opened = {"shift": {"from": "2026-11-22T22:00:00+01:00"}}
        held = await _settled(store, Result.held("no open shift", state=opened), sink="mctime")
        assert await store.person_state("mctime", "m-B1") == opened

        def close(state: Mapping[str, Any]) -> Mapping[str, Any]:
            return {"shift": {**state["shift"], "to": "2026-11-23T06:00:00+01:00"}}

        saved = await store.requeue_held(held, change=close, now=NOW)

        closed = {"shift": {"from": "2026-11-22T22:00:00+01:00", "to": "2026-11-23T06:00:00+01:00"}}
        assert json.loads(saved) == closed
        assert await store.person_state("mctime", "m-B1") == closed
        [job] = (await claim(store, sink="mctime")).jobs
        assert (job.delivery_id, job.state) == (held, closed)
        with pytest.raises(LookupError, match="is inflight, not held"):
            await store.requeue_held(held, change=close, now=NOW)
        with pytest.raises(LookupError, match="no delivery 999999"):
            await store.requeue_held(999_999, change=close, now=NOW)


async def test_a_failing_change_writes_nothing(backend: Backend) -> None:
    async with backend.open() as store:
        await ingest(store, swipe("out", MORNING, action=Action.OUT))
        held = await _settled(store, Result.held("no open shift", state={"n": 1}), sink="mctime")

        def refuse(state: Mapping[str, Any]) -> Mapping[str, Any]:
            msg = "no shift to close"
            raise ValueError(msg)

        with pytest.raises(ValueError, match="no shift to close"):
            await store.requeue_held(held, change=refuse, now=NOW)
        assert (await store.delivery(held))["state"] == "held"
        assert await store.person_state("mctime", "m-B1") == {"n": 1}
        assert await _repairs(backend, store) == []


# --- replay and the repair trace -------------------------------------------------------------


async def test_replay_sends_a_delivered_one_again(backend: Backend) -> None:
    async with backend.open() as store:
        await ingest(store, swipe("a", MORNING), swipe("b", MORNING + timedelta(hours=8)))
        first = await _settled(store, Result.delivered())
        [second] = await store.ids_in("pending", sink=SINK)
        since, until = utc_text(MORNING), utc_text(MORNING + timedelta(hours=1))
        assert await store.delivered_between(SINK, since=since, until=until) == [first]
        assert await store.delivered_between(SINK, since=until, until=None) == []

        moved = await store.replay([first, second], now=NOW)

        assert (moved.changed, moved.refused) == ([first], {second: "pending"})
        assert (await store.delivery(first))["replayed"] == 1
        [job] = (await claim(store)).jobs  # the per-person order holds for a replay too
        assert job.delivery_id == first


async def test_every_guarded_change_leaves_one_repair_row(backend: Backend) -> None:
    async with backend.open() as store:
        await ingest(store, swipe("a", MORNING, badge="B1"), swipe("b", MORNING, badge="B2"))
        delivered = await _settled(store, Result.delivered())
        dead = await _settled(store, Result.dead("422"))
        assert await _last_repair(backend, store) == 0

        await store.replay([delivered], now=NOW)
        await store.move([dead, delivered], expect="dead", to="dropped", now=NOW)
        await store.move([delivered], expect="dead", to="pending", now=NOW)  # nothing changed

        repairs = await _repairs(backend, store)
        assert [(r["change"], json.loads(r["deliveries"])) for r in repairs] == [
            ("replay", [delivered]),
            ("dead -> dropped", [dead]),
        ]
        assert all(abs(r["at"] - time.time()) < 60 and r["by_user"] for r in repairs)
        last = await _last_repair(backend, store)
        assert last == repairs[-1]["id"]
        assert await _repairs(backend, store, repairs[0]["id"]) == repairs[1:]
        assert await _repairs(backend, store, last) == []


# --- rejected payloads -----------------------------------------------------------------------

TOPIC = "clockin/door-1/events"
REASON = "not JSON"


def _rejection(payload: bytes, at: datetime) -> Rejection:
    return Rejection(TOPIC, "canonical", payload, REASON, at, terminal="door-1")


@contextlib.asynccontextmanager
async def _capped(backend: Backend, max_bytes: int) -> AsyncIterator[Any]:
    if backend.name == "sqlite":
        async with backend.open(rejected_max_bytes=max_bytes) as store:
            yield store
        return
    async with backend.open() as store:
        await store.set_rejected_cap(max_bytes)
        yield store


@contextlib.asynccontextmanager
async def _another(backend: Backend, store: Any) -> AsyncIterator[Any]:
    """A second writer: the one SQLite daemon again, or another PostgreSQL instance."""
    if backend.name == "sqlite":
        yield store
        return
    async with backend.open(instance="two") as other:
        yield other


async def _rejected_counts(backend: Backend, store: Any) -> dict[str, int]:
    if backend.name == "sqlite":
        status = await store.status(now=time.time())
        return {key: status[key] for key in status if key.startswith("rejected")}
    return dict(await store.rejected_counts())


async def test_rejected_payloads_stay_under_the_cap_oldest_pruned_first(
    backend: Backend,
) -> None:
    one = footprint(payload_kept=1000, topic=TOPIC, reason=REASON, fmt="canonical")
    async with _capped(backend, 3 * one) as store:
        at = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
        for n in range(5):
            stored = await store.ingest(
                [_rejection(bytes([n]) * 1000, at + timedelta(seconds=n))],
                resolve=lambda _: {},
                received_at=at,
            )
            assert [s.status for s in stored] == [EventStatus.REJECTED]

        page = await store.rejected_page(limit=10)
        assert [bytes((await store.rejected_row(r["id"]))["payload"])[:1] for r in page] == [
            b"\x04",
            b"\x03",
            b"\x02",
        ]
        assert await _rejected_counts(backend, store) == {
            "rejected": 3,
            "rejected_bytes": 3 * one,
            "rejected_max_bytes": 3 * one,
            "rejected_pruned": 2,
        }
        assert page[0] == {
            "id": page[0]["id"],
            "received_at": utc_text(at + timedelta(seconds=4)),
            "topic": TOPIC,
            "format": "canonical",
            "payload_size": 1000,
            "reason": REASON,
            "reprocessed_at": None,
            "reprocessed_as": None,
        }
        # A page goes on below the last id shown.
        assert await store.rejected_page(limit=10, before=page[1]["id"]) == page[2:]


async def test_a_lowered_cap_prunes_at_once(backend: Backend) -> None:
    one = footprint(payload_kept=10, topic=TOPIC, reason=REASON, fmt="canonical")
    async with _capped(backend, 100 * one) as store:
        for n in range(4):
            await store.ingest(
                [_rejection(bytes([n]) * 10, MORNING)], resolve=lambda _: {}, received_at=MORNING
            )
    async with _capped(backend, 2 * one) as store:
        assert (await _rejected_counts(backend, store))["rejected_pruned"] == 2
        kept = [bytes(row["payload"]) for row in await store.rejected_rows()]
        assert kept == [bytes([2]) * 10, bytes([3]) * 10]


async def test_rejecting_at_once_keeps_the_budget_exact(backend: Backend) -> None:
    """Two writers (the SQLite daemon twice, two PostgreSQL instances) reject at once past
    the cap: the running total, the rows kept and the pruned ones still add up."""
    one = footprint(payload_kept=100, topic=TOPIC, reason=REASON, fmt="canonical")
    async with _capped(backend, 5 * one) as first, _another(backend, first) as second:

        async def reject(store: Any, name: str) -> None:
            for n in range(15):
                await store.ingest(
                    [_rejection(name.encode() * 100, MORNING) for _ in range(n % 3 + 1)],
                    resolve=lambda _: {},
                    received_at=MORNING,
                )

        await asyncio.gather(reject(first, "a"), reject(second, "b"))

        rows = await first.rejected_rows()
        assert await _rejected_counts(backend, first) == {
            "rejected": 5,
            "rejected_bytes": 5 * one,
            "rejected_max_bytes": 5 * one,
            "rejected_pruned": 2 * 30 - 5,
        }
        assert len(rows) == 5


async def test_a_large_rejected_payload_is_kept_in_part_with_its_hash(backend: Backend) -> None:
    async with backend.open() as store:
        payload = b"x" * (PAYLOAD_KEPT + 5000)
        await store.ingest(
            [_rejection(payload, MORNING)], resolve=lambda _: {}, received_at=MORNING
        )
        [summary] = await store.rejected_page(limit=10)
        row = await store.rejected_row(summary["id"])
        assert len(row["payload"]) == PAYLOAD_KEPT
        assert row["payload_size"] == len(payload)
        assert row["payload_sha256"] == hashlib.sha256(payload).hexdigest()
        assert await store.rejected_row(summary["id"] + 1) is None


async def test_a_reprocessed_payload_is_marked_once(backend: Backend) -> None:
    async with backend.open() as store:
        await store.ingest(
            [_rejection(b"a", MORNING), _rejection(b"b", MORNING)],
            resolve=lambda _: {},
            received_at=MORNING,
        )
        first, second = (row["id"] for row in await store.rejected_rows())
        marked_at = utc_text(MORNING + timedelta(hours=1))

        assert await store.mark_reprocessed(first, event_key="k1", at=marked_at)
        assert not await store.mark_reprocessed(first, event_key="k2", at=marked_at)

        assert [r["id"] for r in await store.rejected_page(limit=10)] == [second, first]
        assert [r["id"] for r in await store.rejected_page(limit=1)] == [second]
        assert [r["id"] for r in await store.rejected_rows(include_reprocessed=False)] == [second]
        [row] = await store.rejected_rows(ids=[first])
        assert (row["reprocessed_as"], row["reprocessed_at"], bytes(row["payload"])) == (
            "k1",
            marked_at,
            b"a",
        )
        page = await store.rejected_page(limit=10, include_reprocessed=False)
        assert [r["id"] for r in page] == [second]


# --- unmapped badges, recent views -----------------------------------------------------------


def _b9_nowhere_u7_not_at_mctime(event: Any) -> dict[str, str | None]:
    who = event.badge or event.user
    return {
        "go2clock": None if who == "B9" else f"g-{who}",
        "mctime": None if who in {"B9", "u7"} else f"m-{who}",
    }


async def test_unmapped_badges_are_listed_with_their_sinks(backend: Backend) -> None:
    async with backend.open() as store:
        later = MORNING + timedelta(hours=8)
        events = [
            swipe("a", MORNING, badge="B9", action=None),
            swipe("b", later, badge="B9", action=Action.OUT),
            swipe("c", MORNING + timedelta(minutes=5), badge="B1"),
            ClockEvent(
                key="d",
                terminal="door-1",
                badge=None,
                user="u7",
                action=Action.IN,
                time=later,
                time_given=True,
            ),
        ]
        await store.ingest(
            [Incoming(e, TOPIC) for e in events],
            resolve=_b9_nowhere_u7_not_at_mctime,
            received_at=datetime.now(UTC),
        )
        assert await store.unmapped_badges() == [
            {
                "badge": "B9",
                "events": 2,
                "first_seen": utc_text(MORNING),
                "last_seen": utc_text(later),
                "sinks": ["go2clock", "mctime"],
                "inferred": 1,
            },
            {
                "badge": "user:u7",
                "events": 1,
                "first_seen": utc_text(later),
                "last_seen": utc_text(later),
                "sinks": ["mctime"],
                "inferred": 0,
            },
        ]


async def test_recent_events_and_errors_newest_first(backend: Backend) -> None:
    async with backend.open() as store:
        await ingest(store, swipe("a", MORNING, badge="B1"), swipe("b", MORNING, badge="B2"))
        await _settled(store, Result.dead("422 unknown"))
        given_up = await _settled(store, Result.dead("422 also unknown"))
        await store.move([given_up], expect="dead", to="dropped")  # no longer an error to show
        assert await store.recent_events(limit=1) == [
            {
                "key": "b",
                "terminal": "door-1",
                "subject": "badge:B2",
                "action": "in",
                "action_inferred": 0,
                "event_time": utc_text(MORNING),
                "status": "accepted",
            }
        ]
        assert await store.recent_errors() == [
            {"sink": SINK, "state": "dead", "attempts": 1, "last_error": "422 unknown", "key": "a"}
        ]


# --- reconciliation --------------------------------------------------------------------------


async def test_reconcile_views_take_a_half_open_range_of_utc_text(backend: Backend) -> None:
    async with backend.open() as store:
        times = [MORNING + timedelta(hours=h) for h in (0, 4, 8)]
        await ingest(
            store,
            swipe("a", times[0]),
            swipe("dup", times[0] + timedelta(seconds=10)),
            swipe("b", times[1], action=Action.BREAK_START),
            swipe("c", times[2], action=Action.OUT),
        )
        delivered = await _settled(store, Result.delivered())
        since, until = utc_text(times[0]), utc_text(times[2])  # `c` is at `until`: left out

        rows = await store.sink_deliveries(SINK, since=since, until=until)

        assert [(r["action"], r["state"], r["event_time"]) for r in rows] == [
            ("in", "delivered", utc_text(times[0])),
            ("break_start", "pending", utc_text(times[1])),
        ]
        assert rows[0] == {
            "id": delivered,
            "person": "g-B1",
            "state": "delivered",
            "outcome": "delivered",
            "action": "in",
            "event_time": since,
        }
        events = await store.accepted_events(since=since, until=utc_text(times[2] + timedelta(1)))
        assert [(e["badge"], e["user_id"], e["action"], e["event_time"]) for e in events] == [
            ("B1", None, "in", utc_text(times[0])),  # the double swipe is not accepted
            ("B1", None, "break_start", utc_text(times[1])),
            ("B1", None, "out", utc_text(times[2])),
        ]
        assert await store.accepted_events(since=until, until=until) == []
