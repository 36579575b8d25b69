"""Reconciliation: the vendor fakes hold what the bridge delivered, then are changed behind its
back (a punch deleted, one added, a checktype changed...), and `clockin-bridge reconcile` must
say exactly that; `--requeue-missing` must restore a lost Go2Clock punch exactly once."""

from __future__ import annotations

import asyncio
import csv
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry

from bridge.cli import main
from bridge.config import ReconcileConfig, ReconcileQ2Config, Settings, load_settings
from bridge.delivery import Outcome
from bridge.events import Action, ClockEvent
from bridge.reconcile.compare import Delivered, Kind, Punch, compare_punches, entries_from
from bridge.reconcile.daily import next_run, run_daily, run_once
from bridge.reconcile.window import Window
from bridge.store import Incoming, Store
from bridge.vendors.go2clock.simulator import FakeGo2Clock, _read_fields, running_fake_go2clock
from bridge.vendors.go2clock.sink import Go2ClockSink
from bridge.vendors.mctime.readback import times_url
from bridge.vendors.mctime.simulator import FakeMcTime, running_fake_mctime
from bridge.vendors.mctime.sink import McTimeSink
from bridge.vendors.q2.simulator import FakeQ2, running_fake_q2
from bridge.vendors.timetrack.simulator import FakeTimeTrack, running_fake_timetrack
from bridge.vendors.timetrack.sink import TimeTrackSink

SITE = ZoneInfo("Europe/Berlin")
DAY1 = date(2026, 11, 2)  # a Monday, UTC+01:00
Q2_TOKEN = "q2-dev-token-5e1d"


def at(day: date, hhmm: str) -> datetime:
    hours, minutes = hhmm.split(":")
    return datetime(day.year, day.month, day.day, int(hours), int(minutes), tzinfo=SITE)


# -- the bridge's side: events stored, then delivered by the real sink -------------------------


def event(n: int, person: str, action: Action, moment: datetime) -> ClockEvent:
    return ClockEvent(
        key=f"e{n}",
        terminal="door-1",
        badge=None,
        user=person,
        action=action,
        time=moment.astimezone(UTC),
        time_given=True,
    )


def shift(
    person: str, day: date, start: str, end: str, breaks: Sequence[tuple[str, str]] = ()
) -> list[tuple[str, Action, datetime]]:
    punches = [(person, Action.IN, at(day, start))]
    for fr, to in breaks:
        punches += [
            (person, Action.BREAK_START, at(day, fr)),
            (person, Action.BREAK_END, at(day, to)),
        ]
    return [*punches, (person, Action.OUT, at(day, end))]


async def store_and_deliver(
    db: Path, sink: Any, punches: list[tuple[str, Action, datetime]]
) -> None:
    async with Store.open(db, site_tz=SITE) as store:
        await store.ingest(
            [
                Incoming(event(n, p, a, m), "clockin/door-1/events")
                for n, (p, a, m) in enumerate(punches)
            ],
            resolve=lambda e: {sink.name: e.user},
            received_at=datetime.now(UTC),
        )
        await deliver(store, sink)


async def deliver(store: Store, sink: Any) -> None:
    """Claim and send until nothing is due, as the dispatcher would."""
    while jobs := await store.claim(sink.name, limit=50, now=time.time()):
        for job in jobs:
            result = await sink.send(job)
            assert result.outcome in (Outcome.DELIVERED, Outcome.DUPLICATE), result
            await store.settle(job, result, retry_at=time.time() + 3600, now=time.time())


def write_settings(tmp_path: Path, **extra: Any) -> Path:
    config = {
        "site": {"timezone": "Europe/Berlin"},
        "store": {"path": str(tmp_path / "bridge.db")},
        "http": {"enabled": False},
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command line in a thread (it runs its own event loop); the fakes keep serving
    on this one."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def kinds(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return sorted((f["kind"], f["person"], f["day"]) for f in report["findings"])


# -- Go2Clock ----------------------------------------------------------------------------------


class RecordingGo2Clock(FakeGo2Clock):
    """The simulator, recording every range download's form."""

    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[dict[str, str]] = []

    async def download_range(self, request: web.Request) -> web.Response:
        self.ranges.append(await _read_fields(request))
        return await super().download_range(request)


@asynccontextmanager
async def go2clock_bridge(
    tmp_path: Path, punches: list[tuple[str, Action, datetime]]
) -> AsyncIterator[tuple[RecordingGo2Clock, Path, Settings]]:
    fake = RecordingGo2Clock()
    async with running_fake_go2clock(fake) as url:
        path = write_settings(
            tmp_path,
            sinks={
                "go2clock": {
                    "enabled": True,
                    "base_url": url,
                    "api_key": fake.api_key,
                    "timeout_seconds": 5,
                }
            },
        )
        settings = load_settings(path)
        async with aiohttp.ClientSession() as session:
            sink = Go2ClockSink(session=session, config=settings.sinks.go2clock, account_tz=SITE)
            await store_and_deliver(settings.store.path, sink, punches)
        yield fake, path, settings


def two_days() -> list[tuple[str, Action, datetime]]:
    punches = []
    for day in (DAY1, DAY1 + timedelta(days=1)):
        for person in ("1001", "1002", "1003"):
            punches += shift(person, day, "08:00", "16:30")
    return punches


async def test_go2clock_finds_deleted_added_and_changed_punches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with go2clock_bridge(tmp_path, two_days()) as (fake, config, _):
        assert len(fake.records) == 12
        gone = next(
            r
            for r in fake.records
            if (r["userid"], r["checktime"]) == ("1001", "2026-11-02T08:00:00")
        )
        fake.records.remove(gone)  # deleted at the vendor
        changed = next(
            r
            for r in fake.records
            if (r["userid"], r["checktime"]) == ("1002", "2026-11-03T16:30:00")
        )
        changed["checktype"] = "3"  # was 1 (out)
        await fake._store({"userid": "1003", "checktime": "2026-11-02T12:00:00", "checktype": "2"})

        code, out, err = await cli(
            capsys,
            "reconcile",
            "--config",
            str(config),
            "--sink",
            "go2clock",
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-03",
            "--json",
            "--csv",
            str(tmp_path / "payroll.csv"),
        )
        assert code == 1, err
        report = json.loads(out)
        assert kinds(report) == [
            ("different", "1002", "2026-11-03"),
            ("extra", "1003", "2026-11-02"),
            ("missing", "1001", "2026-11-02"),
        ]
        assert report["totals"] == {"matched": 10, "missing": 1, "extra": 1, "different": 1}
        different = next(f for f in report["findings"] if f["kind"] == "different")
        assert (different["bridge"], different["vendor"]) == (
            "2026-11-03 16:30:00 checktype 1",
            "2026-11-03 16:30:00 checktype 3",
        )
        with (tmp_path / "payroll.csv").open(newline="") as f:
            rows = {(r["person"], r["day"]): r for r in csv.DictReader(f)}
        assert len(rows) == 6  # every person and day, matched or not
        assert rows[("1001", "2026-11-02")]["missing"] == "1"
        assert rows[("1001", "2026-11-02")]["matched"] == "1"
        assert rows[("1003", "2026-11-03")]["details"] == ""

        # the table: one row per person and day that does not match, and a summary
        code, out, _ = await cli(
            capsys,
            "reconcile",
            "--config",
            str(config),
            "--sink",
            "go2clock",
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-03",
        )
        assert code == 1
        rows = [line.split() for line in out.splitlines()[1:4]]
        assert rows == [
            ["1001", "2026-11-02", "1", "1", "0", "0"],
            ["1002", "2026-11-03", "1", "0", "0", "1"],
            ["1003", "2026-11-02", "2", "0", "1", "0"],
        ]
        assert "missing at the vendor: 2026-11-02 08:00:00 checktype 0" in out
        assert "10 match, 1 missing at the vendor, 1 only at the vendor, 1 different" in out
        assert fake.api_key not in out


async def test_requeue_missing_restores_the_deleted_punch_exactly_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with go2clock_bridge(tmp_path, two_days()) as (fake, config, settings):
        key = ("1001", "2026-11-02T08:00:00")
        fake.records.remove(next(r for r in fake.records if (r["userid"], r["checktime"]) == key))
        argv = [
            "reconcile",
            "--config",
            str(config),
            "--sink",
            "go2clock",
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-03",
            "--json",
            "--requeue-missing",
        ]
        code, out, _ = await cli(capsys, *argv)
        assert code == 1
        first = json.loads(out)
        assert len(first["requeued"]) == 1
        # run again before the bridge sent it: pending now, so neither missing nor requeued
        code, out, _ = await cli(capsys, *argv)
        assert json.loads(out)["requeued"] == []
        async with (
            aiohttp.ClientSession() as session,
            Store.open(settings.store.path, site_tz=SITE) as store,
        ):
            sink = Go2ClockSink(session=session, config=settings.sinks.go2clock, account_tz=SITE)
            await deliver(store, sink)
            replayed = await store.delivery(first["requeued"][0])
        assert replayed is not None
        assert (replayed["state"], replayed["replayed"]) == (
            "delivered",
            1,
        )
        assert fake.punches_by_key()[key] == 1
        assert len(fake.records) == 12
        code, out, _ = await cli(capsys, *argv)
        assert code == 0, out
        assert json.loads(out)["totals"]["matched"] == 12


async def test_a_30_day_range_is_read_in_calls_of_at_most_7_days(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, last = date(2026, 11, 1), date(2026, 11, 30)
    punches = shift("1001", first, "08:00", "16:00") + shift("1001", last, "22:00", "23:30")
    async with go2clock_bridge(tmp_path, punches) as (fake, config, _):
        code, out, err = await cli(
            capsys,
            "reconcile",
            "--config",
            str(config),
            "--sink",
            "go2clock",
            "--from",
            first.isoformat(),
            "--to",
            last.isoformat(),
            "--json",
        )
        assert code == 0, out + err
        assert json.loads(out)["totals"]["matched"] == 4
    spans = [
        (date.fromisoformat(r["start_date"]), date.fromisoformat(r["end_date"]))
        for r in fake.ranges
    ]
    assert len(spans) == 5
    assert all((end - start).days + 1 <= 7 for start, end in spans)
    assert spans[0][0] == first
    assert spans[-1][1] == last
    assert all(spans[n + 1][0] == spans[n][1] + timedelta(days=1) for n in range(len(spans) - 1))


async def test_an_unreadable_vendor_exits_3_without_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with go2clock_bridge(tmp_path, shift("1001", DAY1, "08:00", "09:00")) as (
        fake,
        config,
        _,
    ):
        fake.api_key = "rotated-at-the-vendor"
        code, out, err = await cli(
            capsys,
            "reconcile",
            "--config",
            str(config),
            "--sink",
            "go2clock",
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-02",
        )
    assert code == 3
    assert "refused the API key" in err
    assert "rotated-at-the-vendor" not in out + err
    assert load_settings(config).sinks.go2clock.api_key.get_secret_value() not in out + err  # type: ignore[union-attr]


async def test_requeue_is_refused_for_the_stateful_sinks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_settings(tmp_path)
    for sink in ("mctime", "timetrack", "q2"):
        code, _, err = await cli(
            capsys,
            "reconcile",
            "--config",
            str(config),
            "--sink",
            sink,
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-02",
            "--requeue-missing",
        )
        assert code == 2
        assert "not safe" in err


# -- McTime ------------------------------------------------------------------------------------


async def test_mctime_entries_missing_extra_and_different(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeMcTime()
    fake.rate_limit = 10_000
    punches = (
        shift("u-a", DAY1, "08:00", "17:00", [("12:00", "12:30")])
        + shift("u-b", DAY1, "09:00", "15:00")
        + shift("u-a", DAY1 + timedelta(days=1), "08:00", "16:00")
    )
    async with running_fake_mctime(fake) as url:
        config = write_settings(
            tmp_path,
            sinks={
                "mctime": {
                    "enabled": True,
                    "base_url": url,
                    "api_key": fake.api_key,
                    "rate_per_second": 1000,
                }
            },
        )
        settings = load_settings(config)
        async with aiohttp.ClientSession() as session:
            sink = McTimeSink(session=session, config=settings.sinks.mctime, site_tz=SITE)
            await store_and_deliver(settings.store.path, sink, punches)
        assert len(fake.entries) == 3
        argv = [
            "reconcile",
            "--config",
            str(config),
            "--sink",
            "mctime",
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-03",
            "--json",
        ]
        code, out, _ = await cli(capsys, *argv)
        assert code == 0, out  # the break is compared too, and matches
        assert json.loads(out)["totals"]["matched"] == 3

        fake.entries = [
            e for e in fake.entries if not (e["userId"] == "u-a" and e["from"].day == 3)
        ]
        b = next(e for e in fake.entries if e["userId"] == "u-b")
        b["to"] = at(DAY1, "14:00")  # shortened at the vendor
        extra = dict(
            b, id="hand-made", userId="u-c", **{"from": at(DAY1, "10:00"), "to": at(DAY1, "11:00")}
        )
        fake.entries.append(extra)  # entered in McTime directly
        code, out, _ = await cli(capsys, *argv)
        assert code == 1
        report = json.loads(out)
        assert kinds(report) == [
            ("different", "u-b", "2026-11-02"),
            ("extra", "u-c", "2026-11-02"),
            ("missing", "u-a", "2026-11-03"),
        ]
        assert report["totals"]["matched"] == 1
        times = fake.gets("/times")[-1]["query"]
        assert times["from"] == "2026-11-02T00:00:00+01:00"  # the + arrived as a +
    assert "%2B01%3A00" in str(times_url("http://x", Window(DAY1, DAY1, SITE)))


# -- TimeTrack ---------------------------------------------------------------------------------


async def test_timetrack_attendances_missing_extra_and_different(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeTimeTrack()
    punches = (
        shift("ana", DAY1, "08:00", "17:00", [("12:00", "12:45")])
        + shift("bo", DAY1, "07:00", "15:00")
        + shift("ana", DAY1 + timedelta(days=1), "08:00", "16:00")
    )
    async with running_fake_timetrack(fake) as url:
        config = write_settings(
            tmp_path,
            sinks={
                "timetrack": {
                    "enabled": True,
                    "base_url": url,
                    "api_key": fake.api_key,
                    "api_secret": fake.api_secret,
                }
            },
        )
        settings = load_settings(config)
        async with aiohttp.ClientSession() as session:
            sink = TimeTrackSink(session=session, config=settings.sinks.timetrack, site_tz=SITE)
            await store_and_deliver(settings.store.path, sink, punches)
        assert len(fake.live()) == 3
        argv = [
            "reconcile",
            "--config",
            str(config),
            "--sink",
            "timetrack",
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-03",
            "--json",
        ]
        code, out, _ = await cli(capsys, *argv)
        assert code == 0, out
        assert json.loads(out)["totals"]["matched"] == 3

        ana_day2 = next(
            a for a in fake.live() if a["user"] == "ana" and a["from"].startswith("2026-11-03")
        )
        ana_day2["deleted"] = True
        ana_day1 = next(a for a in fake.live() if a["user"] == "ana")
        assert ana_day1["breakMinutes"] == 45
        ana_day1["breakMinutes"] = 30  # edited at the vendor
        fake.attendances.append(
            {
                "id": 99,
                "user": "cy",
                "from": "2026-11-02T09:00:00.000Z",
                "to": "2026-11-02T10:00:00.000Z",
                "breakMinutes": 0,
            }
        )
        code, out, _ = await cli(capsys, *argv)
        assert code == 1
        report = json.loads(out)
        assert kinds(report) == [
            ("different", "ana", "2026-11-02"),
            ("extra", "cy", "2026-11-02"),
            ("missing", "ana", "2026-11-03"),
        ]
        assert fake.api_secret not in out
        listed = [r for r in fake.requests if r["method"] == "GET"]
        assert listed[-1]["query"]["page_number"] == "0"


# -- OpenTimeClock Q2 (the shared fake, bridge/vendors/q2/simulator.py) ----------------------


async def test_q2_time_cards_across_several_pages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    days = [DAY1 + timedelta(days=n) for n in range(3)]
    punches = [
        p
        for day in days
        for person in ("7", "8")
        for p in shift(person, day, "08:00", "16:00", [("12:00", "12:30")])
    ]
    fake = FakeQ2(company_id="acme", developer_token=Q2_TOKEN)
    people = {n: fake.add_user(f"Person {n}", employee_number=n) for n in ("7", "8", "9")}
    for day in days:
        for n in ("7", "8"):
            if (n, day) != ("8", days[1]):  # missing in Q2
                fake.add_time_card(people[n], f"{day} 08:00:00", f"{day} 16:00:00")
    fake.add_time_card(people["9"], f"{days[2]} 06:00:00", f"{days[2]} 07:00:00")  # Q2 only
    fake.add_time_card(people["7"], f"{days[0]} 00:00:00", f"{days[0]} 08:00:00", entryType=1)
    fake.add_time_card(people["9"], f"{days[2]} 20:00:00")  # still clocked in: not compared
    async with running_fake_q2(fake) as url:
        config = write_settings(
            tmp_path,
            reconcile={
                "q2": {
                    "base_url": url,
                    "company_id": "acme",
                    "developer_token": Q2_TOKEN,
                    "max_records": 2,
                }
            },
        )
        async with Store.open(tmp_path / "bridge.db", site_tz=SITE) as store:  # Q2 has no sink
            await store.ingest(
                [Incoming(event(n, p, a, m), "t") for n, (p, a, m) in enumerate(punches)],
                resolve=lambda e: {"go2clock": e.user},
                received_at=datetime.now(UTC),
            )
        argv = ["reconcile", "--config", str(config), "--sink", "q2", "--json"]
        code, out, err = await cli(capsys, *argv, "--from", str(days[0]), "--to", str(days[-1]))
        assert code == 1, err
        report = json.loads(out)
        assert kinds(report) == [("extra", "9", "2026-11-04"), ("missing", "8", "2026-11-03")]
        assert report["totals"]["matched"] == 5
        cards = [r for r in fake.requests if r["cmd"] == "api/q2QueryTimeCards"]
        assert [r["params"]["nextRecord"] for r in cards] == ["0", "2", "4", "6"]
        assert all(r["query"] == [] for r in cards)  # the token travels in the body only
        assert Q2_TOKEN not in out + err

        fake.developer_token = "rotated-token-x"
        code, out, err = await cli(capsys, *argv, "--from", str(days[0]), "--to", str(days[0]))
        assert code == 3
        assert "Developer token is not correct" in err
        assert Q2_TOKEN not in out + err


# -- pure parts --------------------------------------------------------------------------------


def test_entries_follow_the_sinks_rules() -> None:
    t = lambda hhmm: at(DAY1, hhmm).astimezone(UTC)  # noqa: E731
    events = [
        Delivered("a", Action.OUT, t("07:00"), 1),  # no in before it: nothing
        Delivered("a", Action.IN, t("08:00"), 2),
        Delivered("a", Action.IN, t("08:01"), 3),  # swiped in twice: the first counts
        Delivered("a", Action.BREAK_START, t("12:00"), 4),
        Delivered("a", Action.OUT, t("13:00"), 5),  # the open break ends with the out
        Delivered("a", Action.IN, t("20:00"), 6),  # still open: no entry yet
    ]
    [entry] = entries_from(events)
    assert (entry.start, entry.end, entry.breaks) == (
        t("08:00"),
        t("13:00"),
        ((t("12:00"), t("13:00")),),
    )
    assert entry.delivery_ids == (2, 4, 5)


def test_punches_compare_numeric_userids_as_numbers() -> None:
    ours = [Punch("007", "2026-11-02 08:00:00", 0, 1)]
    assert compare_punches(ours, [Punch("7", "2026-11-02 08:00:00", 0)]).findings == []
    [finding] = compare_punches(ours, [Punch("7", "2026-11-02 08:00:01", 0)]).findings[:1]
    assert finding.kind is Kind.MISSING


def test_next_run_is_site_local_and_strictly_later() -> None:
    now = datetime(2026, 11, 2, 5, 30, tzinfo=UTC)  # 06:30 in Berlin
    assert next_run(now, "06:30", SITE) == datetime(2026, 11, 3, 5, 30, tzinfo=UTC)
    assert next_run(now, "07:00", SITE) == datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
    summer = datetime(2026, 7, 1, 3, 0, tzinfo=UTC)  # 05:00 CEST
    assert next_run(summer, "06:30", SITE) == datetime(2026, 7, 1, 4, 30, tzinfo=UTC)


def test_reconcile_config() -> None:
    assert ReconcileConfig().daily_at is None
    with pytest.raises(ValueError, match="HH:MM"):
        ReconcileConfig(daily_at="25:00")
    with pytest.raises(ValueError, match="developer_token"):
        ReconcileQ2Config(enabled=True, company_id="acme")
    shipped = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())["reconcile"]
    assert set(shipped) == set(ReconcileConfig.model_fields)
    assert set(shipped["q2"]) == set(ReconcileQ2Config.model_fields)
    secret = Settings(reconcile={"q2": {"developer_token": Q2_TOKEN}})
    assert Q2_TOKEN in secret.secret_values()  # so the log redaction masks it


# -- the daily run -----------------------------------------------------------------------------


async def test_daily_run_exports_the_summary_as_metrics(tmp_path: Path) -> None:
    async with go2clock_bridge(tmp_path, two_days()) as (fake, config, _):
        fake.records.pop()
        settings = load_settings(config)
        registry = CollectorRegistry()
        from bridge.reconcile.daily import ReconcileMetrics

        metrics = ReconcileMetrics(registry)
        async with (
            aiohttp.ClientSession() as session,
            Store.open(settings.store.path, site_tz=SITE) as store,
        ):
            [report] = await run_once(
                settings=settings,
                store=store,
                session=session,
                today=DAY1 + timedelta(days=2),
                metrics=metrics,
            )
            assert report.window.first == DAY1 + timedelta(days=1)  # days: 1, the day before
            stop = asyncio.Event()
            await asyncio.wait_for(
                run_daily(
                    settings=settings,
                    store=store,
                    session=session,
                    stop=stop,
                    registry=CollectorRegistry(),
                ),
                1,
            )  # off
    value = registry.get_sample_value
    assert value("clockin_reconcile_findings", {"source": "go2clock", "kind": "missing"}) == 1
    assert value("clockin_reconcile_matched", {"source": "go2clock"}) == 5
    assert value("clockin_reconcile_read_ok", {"source": "go2clock"}) == 1
