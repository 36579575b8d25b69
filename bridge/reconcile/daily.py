"""The optional daily reconciliation inside the daemon (`reconcile.daily_at`, off by default).

At daily_at (site-local) it compares the last `reconcile.days` complete days for every enabled
sink (and Q2 when `reconcile.q2.enabled`), logs one `reconcile.done` line per source (or
`reconcile.failed`), and sets the gauges below. It only reports: it never requeues.

Wiring (in Bridge.run, inside the TaskGroup, once store and session exist):

    tg.create_task(run_daily(settings=settings, store=store, session=session,
                             stop=self._stop, registry=self.metrics.registry),
                   name="reconcile.daily")
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from prometheus_client import CollectorRegistry, Gauge

from bridge.config import Settings
from bridge.http import Session
from bridge.reconcile.compare import Kind
from bridge.reconcile.fetch import ReadError
from bridge.reconcile.run import Report, reconcile
from bridge.store import DaemonStore

log = structlog.get_logger("bridge.reconcile")


class ReconcileMetrics:
    """The daily run's gauges, registered on the bridge's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.findings = Gauge(
            "clockin_reconcile_findings",
            "Last daily reconciliation: entries missing at the vendor, only at the vendor,"
            " or different, per source",
            ["source", "kind"],
            registry=registry,
        )
        self.matched = Gauge(
            "clockin_reconcile_matched",
            "Last daily reconciliation: entries that match",
            ["source"],
            registry=registry,
        )
        self.last_success = Gauge(
            "clockin_reconcile_last_success_timestamp_seconds",
            "Unix time the source was last compared (whatever the result)",
            ["source"],
            registry=registry,
        )
        self.read_ok = Gauge(
            "clockin_reconcile_read_ok",
            "1 when the last daily run could read the source, 0 when it could not",
            ["source"],
            registry=registry,
        )

    def record(self, report: Report, *, now: float) -> None:
        for kind in Kind:
            self.findings.labels(report.source, kind.value).set(report.count(kind))
        self.matched.labels(report.source).set(report.matched)
        self.last_success.labels(report.source).set(now)
        self.read_ok.labels(report.source).set(1)

    def failed(self, source: str) -> None:
        self.read_ok.labels(source).set(0)


def daily_sources(settings: Settings) -> list[str]:
    sources = list(settings.sinks.enabled())
    return [*sources, "q2"] if settings.reconcile.q2.enabled else sources


def next_run(now: datetime, daily_at: str, tz: ZoneInfo) -> datetime:
    """The next daily_at (site-local wall time) strictly after `now`, as aware UTC."""
    hours, minutes = (int(part) for part in daily_at.split(":"))
    local = now.astimezone(tz)
    due = local.replace(hour=hours, minute=minutes, second=0, microsecond=0)
    if due <= local:
        due = (local + timedelta(days=1)).replace(
            hour=hours, minute=minutes, second=0, microsecond=0
        )
        due = due.replace(tzinfo=tz)  # re-resolve the offset on the next day (DST)
    return due.astimezone(UTC)


async def run_once(
    *,
    settings: Settings,
    store: DaemonStore,
    session: Session,
    today: date,
    metrics: ReconcileMetrics | None = None,
    clock: Callable[[], float] = time.time,
) -> list[Report]:
    """Compare the last `reconcile.days` complete days before `today` for every source."""
    first = today - timedelta(days=settings.reconcile.days)
    last = today - timedelta(days=1)
    reports = []
    for source in daily_sources(settings):
        try:
            report = await reconcile(
                source, settings=settings, store=store, session=session, first=first, last=last
            )
        except ReadError as err:
            log.warning("reconcile.failed", source=source, error=str(err))
            if metrics is not None:
                metrics.failed(source)
            continue
        except Exception:  # a loop boundary: log with the traceback, keep the daemon up
            log.exception("reconcile.failed", source=source)
            if metrics is not None:
                metrics.failed(source)
            continue
        log.info(
            "reconcile.done",
            source=source,
            first=first.isoformat(),
            last=last.isoformat(),
            matched=report.matched,
            **{k.value: report.count(k) for k in Kind},
        )
        if metrics is not None:
            metrics.record(report, now=clock())
        reports.append(report)
    return reports


async def run_daily(
    *,
    settings: Settings,
    store: DaemonStore,
    session: Session,
    stop: asyncio.Event,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Run at daily_at until `stop` is set; returns at once when daily_at is null."""
    daily_at = settings.reconcile.daily_at
    if daily_at is None:
        return
    metrics = None if registry is None else ReconcileMetrics(registry)
    tz = settings.site.tz
    while not stop.is_set():
        now = datetime.fromtimestamp(clock(), UTC)
        due = next_run(now, daily_at, tz)
        try:
            await asyncio.wait_for(stop.wait(), timeout=(due - now).total_seconds())
        except TimeoutError:
            pass
        else:
            return
        today = datetime.fromtimestamp(clock(), UTC).astimezone(tz).date()
        await run_once(
            settings=settings,
            store=store,
            session=session,
            today=today,
            metrics=metrics,
            clock=clock,
        )
