"""The people directory from the vendors: each source against its fake, the merge (file as the
operator's override, conflicts left unmapped), the SQLite cache through failures and restarts,
the `directory` command, and unmapped events released after a sync by the running bridge."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import structlog
from pydantic import SecretStr

from bridge.cli import main
from bridge.config import ConfigError, Settings
from bridge.directory.build import build_sources
from bridge.directory.file import Directory
from bridge.directory.live import LiveDirectory
from bridge.directory.merge import merge
from bridge.directory.records import Record, SourceError
from bridge.directory.sync import sync
from bridge.ops.logs import configure_logging
from bridge.store import Store
from bridge.vendors.go2clock.users import Go2ClockUsers
from bridge.vendors.mctime.users import McTimeUsers
from bridge.vendors.q2.users import Q2Users
from bridge.vendors.timetrack.users import TimeTrackUsers
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.fakes.mctime import FakeMcTime, running_fake_mctime
from tests.fakes.q2 import FakeQ2, running_fake_q2
from tests.fakes.timetrack import FakeTimeTrack, running_fake_timetrack
from tests.harness import (
    API_KEY,
    canonical,
    publish,
    running_bridge,
    settings_from,
    wait_until,
    write_config,
)

TOPIC = "clockin/gate1/events"
G2C_KEY = "g2c-key-Zq81"
Q2_TOKEN = "q2-dev-token-Xy77"
MC_KEY = "mctime-key-Pp42"
TT_KEY, TT_SECRET = "tt-key-Aa11", "tt-secret-Bb22"
PIN = "pin-9hV3"  # Go2Clock lists each user's pwd: it must never reach the cache


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def go2clock_source(url: str, key: str = G2C_KEY) -> Go2ClockUsers:
    return Go2ClockUsers(base_url=url, api_key=SecretStr(key), timeout=5, id_column="userid")


def q2_source(url: str, token: str = Q2_TOKEN, **kw: Any) -> Q2Users:
    return Q2Users(url=url, company_id="acme", developer_token=SecretStr(token), timeout=5, **kw)


def mctime_source(url: str, join_on: str = "employee_number") -> McTimeUsers:
    field = "employeeNumber" if join_on == "employee_number" else "email"
    return McTimeUsers(
        base_url=url,
        api_key=SecretStr(MC_KEY),
        timeout=5,
        id_column="mctime_user_id",
        join_on=join_on,
        vendor_field=field,
    )


def timetrack_source(url: str, join_on: str = "email", page_size: int = 1000) -> TimeTrackUsers:
    field = "employeeNumber" if join_on == "employee_number" else "email"
    return TimeTrackUsers(
        base_url=url,
        api_key=SecretStr(TT_KEY),
        api_secret=SecretStr(TT_SECRET),
        timeout=5,
        id_column="timetrack_username",
        join_on=join_on,
        vendor_field=field,
        page_size=page_size,
    )


def q2_fake() -> FakeQ2:
    return FakeQ2(company_id="acme", developer_token=Q2_TOKEN)


# --- each source against its fake ----------------------------------------------------------


async def test_go2clock_employees_map_idcard_to_userid(session: aiohttp.ClientSession) -> None:
    fake = FakeGo2Clock(api_key=G2C_KEY)
    fake.add_user(7, "04:a1:b2:c3", "Ada Lovelace", pwd=PIN)
    fake.add_user(8, "", "No Card", pwd=PIN)  # no badge: nothing to map
    async with running_fake_go2clock(fake) as url:
        records = await go2clock_source(url).fetch(session)
    assert records == [
        Record("04A1B2C3", {"userid": "7", "name": "Ada Lovelace", "department": "Staff"})
    ]
    assert fake.user_requests == ["/api/users/", "/api/employees/"]
    assert PIN not in repr(records)


async def test_go2clock_wrong_key_is_a_source_error_without_the_key(
    session: aiohttp.ClientSession,
) -> None:
    fake = FakeGo2Clock(api_key=G2C_KEY)
    async with running_fake_go2clock(fake) as url:
        with pytest.raises(SourceError, match="credentials refused") as info:
            await go2clock_source(url, key="wrong-key-123").fetch(session)
    assert "wrong-key-123" not in str(info.value)


async def test_q2_users_are_paged_by_next_record(session: aiohttp.ClientSession) -> None:
    fake = q2_fake()
    for n in range(12):
        fake.add_user(f"Person {n:02d}", digit_id=f"{5000 + n}", employee_number=f"E{n}")
    fake.add_user("Gone Away", digit_id="6000", employee_number="E99", role="Inactive")
    async with running_fake_q2(fake) as url:
        records = await q2_source(url, max_records=5).fetch(session)
    # 13 users in pages of 5: nextRecord 0, 5, 10, then "-1"
    assert [r["params"]["nextRecord"] for r in fake.requests] == ["0", "5", "10"]
    assert fake.pages() == 3
    assert all(r["query"] == [] for r in fake.requests)  # the token never goes in a URL
    assert len(records) == 12  # the Inactive user is not mapped
    assert "6000" not in {r.badge for r in records}
    first = records[0]
    assert first.badge == "5000"
    assert first.fields["employee_number"] == "E0"
    assert first.fields["name"] == "Person 00"
    assert first.fields["email"] == "person.00@example.com"
    assert first.fields["role"] == "Employee"


async def test_q2_employee_number_can_be_the_badge(session: aiohttp.ClientSession) -> None:
    fake = q2_fake()
    fake.add_user("Ada Lovelace", digit_id="1", employee_number="77001")
    async with running_fake_q2(fake) as url:
        records = await q2_source(url, badge_field="employeeNumber").fetch(session)
    assert [r.badge for r in records] == ["77001"]


async def test_q2_refusal_says_why_and_not_the_token(session: aiohttp.ClientSession) -> None:
    fake = q2_fake()
    async with running_fake_q2(fake) as url:
        with pytest.raises(SourceError, match="Developer token is not correct") as info:
            await q2_source(url, token="bad-token-555").fetch(session)
    assert "bad-token-555" not in str(info.value)


async def test_q2_time_cards_share_the_fake(session: aiohttp.ClientSession) -> None:
    fake = q2_fake()
    ada = fake.add_user("Ada Lovelace", digit_id="1", employee_number="E1")
    for day in range(1, 8):
        fake.add_time_card(ada, f"2026-11-0{day} 08:00:00", f"2026-11-0{day} 16:00:00")
    body = {
        "cmd": "api/q2QueryTimeCards",
        "companyId": "acme",
        "developerToken": Q2_TOKEN,
        "dateTimeFrom": "2026-11-02 00:00:00",
        "dateTimeTo": "2026-11-06 23:59:59",
        "maxRecords": "2",
        "nextRecord": "0",
    }
    cards, pages = [], 0
    async with running_fake_q2(fake) as url:
        while True:
            async with session.post(url, json=body) as response:
                answer = await response.json()
            pages += 1
            cards += answer["data"]
            if answer["nextRecord"] == "-1":
                break
            body["nextRecord"] = answer["nextRecord"]
    assert pages == 3
    assert [c["inDateTime"][:10] for c in cards] == [f"2026-11-0{d}" for d in range(2, 7)]


async def test_mctime_users_pages_of_20_join_by_employee_number(
    session: aiohttp.ClientSession,
) -> None:
    fake = FakeMcTime(api_key=MC_KEY)
    for n in range(45):
        fake.add_user(f"u-{n:02d}", f"User {n}", employeeNumber=f"E{n}")
    fake.add_user("u-x", "No Number")  # nothing to join it by
    async with running_fake_mctime(fake) as url:
        records = await mctime_source(url).fetch(session)
    assert [r["query"]["page"] for r in fake.gets("/users")] == ["1", "2", "3"]
    assert len(records) == 45
    assert records[0] == Record(
        None,
        {"mctime_user_id": "u-00", "employee_number": "E0", "name": "User 0"},
        join_on="employee_number",
    )


async def test_timetrack_users_join_by_email(session: aiohttp.ClientSession) -> None:
    fake = FakeTimeTrack(api_key=TT_KEY, api_secret=TT_SECRET)
    for n in range(5):
        fake.add_user(f"user{n}", email=f"User{n}@Example.com")
    async with running_fake_timetrack(fake) as url:
        records = await timetrack_source(url, page_size=2).fetch(session)
    pages = [r["query"]["page_number"] for r in fake.requests]
    assert pages == ["0", "1", "2"]
    assert [r.fields["timetrack_username"] for r in records] == [f"user{n}" for n in range(5)]
    assert {r.join_on for r in records} == {"email"}


# --- merging ------------------------------------------------------------------------------


def badge_record(badge: str, **fields: str) -> Record:
    return Record(badge, fields)


def account(join_on: str, **fields: str) -> Record:
    return Record(None, fields, join_on=join_on)


def test_each_source_contributes_to_one_person() -> None:
    merged = merge(
        None,
        {
            "go2clock": [badge_record("04A1", userid="7", name="Ada")],
            "q2": [badge_record("04A1", name="Ada L.", employee_number="E7", email="ADA@x.org")],
            "mctime": [account("employee_number", mctime_user_id="mc-7", employee_number="E7")],
            "timetrack": [account("email", timetrack_username="ada", email="ada@X.org")],
        },
    )
    person = merged.directory.lookup("04a1")
    assert person is not None
    assert (person.userid, person.name) == ("7", "Ada")  # the first source's name stands
    assert person.extra["mctime_user_id"] == "mc-7"
    assert person.extra["timetrack_username"] == "ada"  # e-mail joins ignore case
    assert merged.origins["04A1"]["mctime_user_id"] == "mctime"
    assert merged.conflicts == ()


def test_one_badge_two_people_is_a_conflict_left_unmapped() -> None:
    merged = merge(
        None,
        {
            "go2clock": [badge_record("04A1", userid="7"), badge_record("04A1", userid="9")],
            "q2": [badge_record("04B2", employee_number="E1")],
        },
    )
    assert merged.directory.lookup("04A1") is None
    assert merged.directory.lookup("04B2") is not None
    assert merged.conflicts == (
        "badge 04A1: go2clock says userid 7, go2clock says userid 9: left unmapped",
    )
    assert merged.conflicts[0] in merged.directory.problems


def test_sources_disagreeing_on_a_person_is_a_conflict() -> None:
    merged = merge(
        None,
        {
            "go2clock": [badge_record("04A1", userid="7", email="ada@x.org")],
            "q2": [badge_record("04A1", employee_number="E7", email="grace@x.org")],
        },
    )
    assert merged.directory.lookup("04A1") is None
    assert "go2clock says email ada@x.org, q2 says email grace@x.org" in merged.conflicts[0]


def test_the_file_is_the_operators_override() -> None:
    file = Directory.from_csv_text("badge,userid,name,employee_number\n04A1,12,Ada,E7\n")
    merged = merge(
        file,
        {
            "go2clock": [badge_record("04A1", userid="7"), badge_record("04A1", userid="9")],
            "mctime": [account("employee_number", mctime_user_id="mc-7", employee_number="E7")],
        },
    )
    person = merged.directory.lookup("04A1")
    assert person is not None
    assert person.userid == "12"  # the file settles the sources' disagreement
    assert person.extra["mctime_user_id"] == "mc-7"  # joined through the file's number
    assert merged.origins["04A1"]["userid"] == "file"
    assert merged.conflicts == ()


def test_a_badge_the_file_lists_twice_stays_unmapped() -> None:
    file = Directory.from_csv_text("badge,userid\n04A1,12\n04A1,13\n")
    merged = merge(file, {"go2clock": [badge_record("04A1", userid="12")]})
    assert merged.directory.lookup("04A1") is None


def test_an_account_key_two_users_share_joins_none() -> None:
    merged = merge(
        None,
        {
            "q2": [badge_record("04A1", employee_number="E7")],
            "mctime": [
                account("employee_number", mctime_user_id="mc-1", employee_number="E7"),
                account("employee_number", mctime_user_id="mc-2", employee_number="E7"),
            ],
        },
    )
    person = merged.directory.lookup("04A1")
    assert person is not None
    assert "mctime_user_id" not in person.extra
    assert merged.unjoined == ("mctime: 2 users have employee_number E7: none of them joined",)


# --- the cache ------------------------------------------------------------------------------


async def open_store(path: Path) -> Any:
    return Store.open(path, site_tz=ZoneInfo("UTC"))


async def test_cache_keeps_people_through_an_outage_and_a_restart(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    db = tmp_path / "bridge.db"
    fake = FakeGo2Clock(api_key=G2C_KEY)
    fake.add_user(7, "04A1", "Ada", pwd=PIN)
    async with running_fake_go2clock(fake) as url:
        source = go2clock_source(url)
        async with await open_store(db) as store:
            first = await sync(store, session, [source])
            assert [(o.ok, o.records, o.changed) for o in first] == [(True, 1, True)]
            again = await sync(store, session, [source])
            assert [(o.ok, o.changed) for o in again] == [(True, False)]
            revision = await store.directory_revision()
            fake.users_fail_5xx = 2  # both list requests of the next sync get a 503
            failed = await sync(store, session, [source])
            assert [(o.ok, o.error) for o in failed] == [(False, "/api/users/: HTTP 503")]
            assert await store.directory_revision() == revision
            state = await store.directory_sync_state()
            assert state[0]["error"] == "/api/users/: HTTP 503"
            assert state[0]["records"] == 1
    # a restart: nothing fetched, the badge still maps from the cache
    async with await open_store(db) as store:
        live = LiveDirectory(file=None, sources=["go2clock"])
        assert live.current.lookup("04A1") is None
        assert await live.refresh(store) is True
        person = live.current.lookup("04A1")
        assert person is not None
        assert person.userid == "7"
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("bridge.db*"))
    assert b"Ada" in raw  # the check below can see what the cache holds
    assert G2C_KEY.encode() not in raw
    assert PIN.encode() not in raw


async def test_a_sync_that_changes_nothing_does_not_remerge(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    fake = q2_fake()
    fake.add_user("Ada Lovelace", digit_id="1", employee_number="E1")
    async with running_fake_q2(fake) as url, await open_store(tmp_path / "b.db") as store:
        live = LiveDirectory(file=None, sources=["q2"])
        await sync(store, session, [q2_source(url)])
        assert await live.refresh(store) is True
        await sync(store, session, [q2_source(url)])
        assert await live.refresh(store) is False
        fake.add_user("Grace Hopper", digit_id="2", employee_number="E2")
        await sync(store, session, [q2_source(url)])
        assert await live.refresh(store) is True
        assert len(live.current) == 2


# --- config -------------------------------------------------------------------------------


def test_source_credentials_fall_back_to_the_sink() -> None:
    settings = Settings(
        sinks={"go2clock": {"api_key": "sink-key", "base_url": "http://g2c:1"}},
        directory={"sources": {"go2clock": {"enabled": True}}},
    )
    [source] = build_sources(settings)
    assert source.secrets() == ["sink-key"]


def test_enabled_source_without_credentials_is_a_config_error() -> None:
    settings = Settings(directory={"sources": {"mctime": {"enabled": True}}})
    with pytest.raises(ConfigError, match=r"directory\.sources\.mctime\.api_key"):
        build_sources(settings)


def test_source_secret_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(Q2_TOKEN + "\n")
    settings = Settings(
        directory={
            "sources": {
                "q2": {
                    "enabled": True,
                    "company_id": "acme",
                    "developer_token_file": str(tmp_path / "token"),
                }
            }
        }
    )
    assert settings.directory.secret_values() == [Q2_TOKEN]
    assert Q2_TOKEN not in repr(settings)


# --- the running bridge -------------------------------------------------------------------


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def _unmapped(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'unmapped'").fetchone()[
            0
        ]


async def test_periodic_sync_releases_an_unmapped_swipe_exactly_once(
    broker: Mosquitto, tmp_path: Path, log_lines: io.StringIO
) -> None:
    """Q2 knows the badge's employee number, McTime the person's userId by that number: a
    swipe that waited unmapped goes to McTime once, after a sync that failed twice first."""
    q2, mctime, go2clock = q2_fake(), FakeMcTime(api_key=MC_KEY), FakeGo2Clock(api_key=API_KEY)
    q2.fail_5xx = 2
    async with (
        running_fake_q2(q2) as q2_url,
        running_fake_mctime(mctime) as mc_url,
        running_fake_go2clock(go2clock) as g2c_url,
    ):
        extra = {
            "directory": {
                "sync_minutes": 0.005,  # 0.3 s
                "sources": {
                    "q2": {
                        "enabled": True,
                        "url": q2_url,
                        "company_id": "acme",
                        "developer_token": Q2_TOKEN,
                        "timeout_seconds": 2,
                    },
                    "mctime": {"enabled": True, "timeout_seconds": 2},
                },
            },
            "sinks": {
                "go2clock": {"enabled": False},
                "mctime": {
                    "enabled": True,
                    "base_url": mc_url,
                    "api_key": MC_KEY,
                    "timeout_seconds": 2,
                },
            },
        }
        config = write_config(tmp_path, broker_port=broker.port, go2clock_url=g2c_url, extra=extra)
        settings = settings_from(config)
        async with running_bridge(settings):
            await publish(broker.port, [(TOPIC, canonical(1, badge="CAFE01"))])
            await wait_until(
                lambda: _async(_unmapped(settings.store.path) == 1), timeout=10, what="unmapped"
            )
            await asyncio.sleep(1.0)  # a few syncs: the 503s, then good ones without the person
            assert mctime.posts() == []
            q2.add_user("Ada Lovelace", digit_id="CAFE01", employee_number="E42")
            mctime.add_user("mc-ada", "Ada Lovelace", employeeNumber="E42")
            await mctime.wait_until(lambda: len(mctime.posts()) >= 1, timeout=10)
            await asyncio.sleep(1.0)  # more syncs must not send it again
    starts = mctime.posts("start")
    assert [post["body"]["userId"] for post in starts] == ["mc-ada"]
    assert len(mctime.posts()) == 1
    assert _unmapped(settings.store.path) == 0
    logged = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    failed = [e for e in logged if e["event"] == "directory.source_failed"]
    assert [(e["source"], e["error"]) for e in failed] == [("q2", "HTTP 503")]  # once
    assert [e["source"] for e in logged if e["event"] == "directory.source_recovered"] == ["q2"]
    assert Q2_TOKEN not in log_lines.getvalue()
    assert MC_KEY not in log_lines.getvalue()


async def _async(value: bool) -> bool:
    return value


async def test_cli_sync_beside_the_daemon_releases_the_swipe_once(
    broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    go2clock = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(go2clock) as url:
        extra = {"directory": {"sources": {"go2clock": {"enabled": True}}}}  # the sink's key
        config = write_config(tmp_path, broker_port=broker.port, go2clock_url=url, extra=extra)
        settings = settings_from(config)
        async with running_bridge(settings):
            await publish(broker.port, [(TOPIC, canonical(1, badge="CAFE02"))])
            await wait_until(
                lambda: _async(_unmapped(settings.store.path) == 1), timeout=10, what="unmapped"
            )
            go2clock.add_user(4711, "CAFE02", "Grace Hopper", pwd=PIN)
            code = await asyncio.to_thread(main, ["directory", "sync", "--config", str(config)])
            assert code == 0
            records = await go2clock.wait_for_records(1, timeout=10)
            await asyncio.sleep(0.6)  # the watcher polls every 0.2 s: nothing more may go out
        assert len(go2clock.records) == 1
        assert records[0]["userid"] == "4711"
        out = capsys.readouterr().out
        assert "go2clock" in out
        assert "ok" in out
        # list and show, table and JSON
        assert (
            await asyncio.to_thread(main, ["directory", "show", "cafe02", "--config", str(config)])
            == 0
        )
        shown = capsys.readouterr().out
        assert "4711" in shown
        assert "go2clock" in shown
        assert (
            await asyncio.to_thread(main, ["directory", "list", "--json", "--config", str(config)])
            == 0
        )
        listed = json.loads(capsys.readouterr().out)
        ids = {p["badge"]: p["ids"]["go2clock"] for p in listed["people"]}
        assert ids["CAFE02"] == "4711"
        assert ids["B0001"] == "1001"  # the file's people are there too
        assert listed["sources"][0]["source"] == "go2clock"
        assert PIN not in json.dumps(listed)
        assert (
            await asyncio.to_thread(main, ["directory", "show", "NOPE01", "--config", str(config)])
            == 1
        )
