"""Go2Clock and broker faults with the bridge running in-process: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import (
    API_KEY,
    canonical,
    event_time,
    publish,
    running_bridge,
    settings_from,
    wait_until,
    write_config,
)

TOPIC = "clockin/gate2/events"


def _states(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state"))


def _assert_exactly_once(fake: FakeGo2Clock, count: int) -> None:
    punches = fake.punches_by_key()
    assert len(punches) == count
    assert max(punches.values()) == 1


async def test_go2clock_down_then_up(broker: Mosquitto, tmp_path: Path):
    fake = FakeGo2Clock(api_key=API_KEY)
    fake.fail_5xx = 12
    fake.unexpected_errors = 5
    async with running_fake_go2clock(fake) as url:
        settings = settings_from(write_config(tmp_path, broker_port=broker.port, go2clock_url=url))
        async with running_bridge(settings):
            await publish(broker.port, [(TOPIC, canonical(n)) for n in range(50)])
            await fake.wait_for_records(50, timeout=30)
    _assert_exactly_once(fake, 50)
    answers = [request["answer"] for request in fake.requests]
    assert answers.count("http_503") == 12


async def test_lost_answers_are_resent_and_recognised_as_duplicates(
    broker: Mosquitto, tmp_path: Path
):
    fake = FakeGo2Clock(api_key=API_KEY)
    fake.lose_answers = 10
    async with running_fake_go2clock(fake) as url:
        settings = settings_from(write_config(tmp_path, broker_port=broker.port, go2clock_url=url))
        async with running_bridge(settings):
            await publish(broker.port, [(TOPIC, canonical(n)) for n in range(30)])
            await wait_until(
                lambda: _all_delivered(settings.store.path, 30), timeout=30, what="30 delivered"
            )
    _assert_exactly_once(fake, 30)
    # each lost answer causes at most one resend, which the vendor answers "already exists"
    assert 1 <= fake.duplicate_answers <= 10


async def _all_delivered(db: Path, count: int) -> bool:
    return _states(db) == {"delivered": count}


async def test_timeouts_past_the_deadline_are_retried(broker: Mosquitto, tmp_path: Path):
    fake = FakeGo2Clock(api_key=API_KEY)
    fake.delay_seconds = 3.0  # the test config's timeout is 2 s
    async with running_fake_go2clock(fake) as url:
        settings = settings_from(write_config(tmp_path, broker_port=broker.port, go2clock_url=url))
        async with running_bridge(settings):
            await publish(broker.port, [(TOPIC, canonical(n)) for n in range(4)])
            await fake.wait_for_records(4, timeout=10)
            fake.delay_seconds = 0
            await wait_until(
                lambda: _all_delivered(settings.store.path, 4), timeout=20, what="4 delivered"
            )
    _assert_exactly_once(fake, 4)


async def test_wrong_key_pauses_the_sink_then_resumes(broker: Mosquitto, tmp_path: Path):
    fake = FakeGo2Clock(api_key="the-real-key")
    async with running_fake_go2clock(fake) as url:
        settings = settings_from(write_config(tmp_path, broker_port=broker.port, go2clock_url=url))
        async with running_bridge(settings) as bridge:
            await publish(broker.port, [(TOPIC, canonical(n)) for n in range(20)])
            dispatcher = bridge.dispatchers["go2clock"]
            await wait_until(
                _true_when(lambda: dispatcher.paused_since is not None),
                timeout=10,
                what="sink paused",
            )
            await asyncio.sleep(1.0)  # several probe intervals
            refused = len(fake.requests)
            assert refused <= 4 + 4  # the first wave, then one slow probe at a time
            assert "dead" not in _states(settings.store.path)
            fake.api_key = API_KEY  # the operator fixed the key at the vendor
            await fake.wait_for_records(20, timeout=15)
            await wait_until(
                _true_when(lambda: dispatcher.paused_since is None), timeout=5, what="sink resumed"
            )
    _assert_exactly_once(fake, 20)


def _true_when(check):
    async def predicate() -> bool:
        return bool(check())

    return predicate


async def test_validation_error_goes_dead_and_others_flow(broker: Mosquitto, tmp_path: Path):
    fake = FakeGo2Clock(api_key=API_KEY)
    fake.invalid_userids = {"1003"}  # badge B0003
    async with running_fake_go2clock(fake) as url:
        settings = settings_from(write_config(tmp_path, broker_port=broker.port, go2clock_url=url))
        async with running_bridge(settings):
            await publish(broker.port, [(TOPIC, canonical(n)) for n in range(10)])
            await wait_until(
                lambda: _settled_count(settings.store.path, 10), timeout=15, what="10 settled"
            )
    assert _states(settings.store.path) == {"delivered": 9, "dead": 1}
    with sqlite3.connect(settings.store.path) as conn:
        (error,) = conn.execute("SELECT last_error FROM deliveries WHERE state = 'dead'").fetchone()
    assert "Validation Error" in error


async def _settled_count(db: Path, count: int) -> bool:
    states = _states(db)
    return states.get("delivered", 0) + states.get("dead", 0) == count


async def test_a_persons_punches_stay_in_order_while_one_is_retrying(
    broker: Mosquitto, tmp_path: Path
):
    fake = FakeGo2Clock(api_key=API_KEY)
    fake.unexpected_errors = 3  # the first punch fails three times
    badge_events = []
    for i, action in enumerate(["in", "break_start", "break_end", "out"]):
        when = event_time(0).replace(hour=8 + i)
        badge_events.append(
            json.dumps(
                {"id": f"p{i}", "badge": "B0007", "action": action, "time": when.isoformat()}
            ).encode()
        )
    async with running_fake_go2clock(fake) as url:
        settings = settings_from(write_config(tmp_path, broker_port=broker.port, go2clock_url=url))
        async with running_bridge(settings):
            await publish(broker.port, [(TOPIC, payload) for payload in badge_events])
            await fake.wait_for_records(4, timeout=15)
    sent = [request["form"]["checktype"] for request in fake.requests]
    assert sent == ["0", "0", "0", "0", "2", "3", "1"]


async def test_broker_restart_mid_stream(broker: Mosquitto, tmp_path: Path):
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        settings = settings_from(write_config(tmp_path, broker_port=broker.port, go2clock_url=url))
        async with running_bridge(settings):
            await publish(broker.port, [(TOPIC, canonical(n)) for n in range(100)])
            # A clean restart here (the broker saves its store on the way down); SIGKILLs of
            # the broker are in tests/faults/test_kill_broker.py.
            await asyncio.to_thread(broker.restart)
            await publish(broker.port, [(TOPIC, canonical(n)) for n in range(100, 200)])
            await fake.wait_for_records(200, timeout=30)
    _assert_exactly_once(fake, 200)
