"""Wires ingest, store, dispatchers and sinks together and owns the daemon's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import structlog

from bridge import __version__
from bridge.config import ConfigError, Settings, load_settings
from bridge.delivery import Job
from bridge.directory import Source, build_sources
from bridge.directory.people import People, open_directory, sink_columns
from bridge.dispatch.health import SinkState
from bridge.dispatch.pump import Dispatcher
from bridge.http import Session, new_session
from bridge.ingest import Ingest
from bridge.ingest.junk import JunkLimiter
from bridge.ops import heartbeat, systemd, web
from bridge.ops.logs import register_secret, set_level
from bridge.ops.metrics import Metrics
from bridge.reconcile.daily import run_daily
from bridge.store import QueueStatus, Store, Stored
from bridge.vendors.registry import build_sinks

log = structlog.get_logger("bridge.app")

SHUTDOWN_GRACE_SECONDS = 10.0


def _iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()


class Bridge:
    """The running daemon. `stop()` (or SIGTERM/SIGINT) ends `run()` cleanly."""

    def __init__(self, settings: Settings, *, config_path: Path | None = None):
        self.settings = settings
        self.config_path = config_path  # re-read on SIGHUP
        self._reload_requested = asyncio.Event()
        self._session: Session | None = None
        self._stop = asyncio.Event()
        self.dispatchers: dict[str, Dispatcher] = {}
        self.ingest: Ingest | None = None
        self.store: Store | None = None
        self.ready = asyncio.Event()
        self.metrics = Metrics()
        self.http_port: int | None = None
        self.people: People | None = None
        self._started_at = time.time()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        settings = self.settings
        sources = build_sources(settings)  # ConfigError: an enabled source lacks credentials
        async with contextlib.AsyncExitStack() as stack:
            self.store = store = await stack.enter_async_context(
                Store.open(
                    settings.store.path,
                    site_tz=settings.site.tz,
                    window_seconds=settings.dedupe.window_seconds,
                    rejected_max_bytes=settings.store.rejected_max_mb * 1024 * 1024,
                )
            )
            # The directory: the CSV file and the vendors' user lists, cached in SQLite so it
            # carries on through a vendor outage and across restarts.
            directory = await open_directory(settings, store, sources)
            recovered = await store.recover_inflight()
            if recovered:
                log.warning("delivery.recovered", count=recovered)
            if settings.http.enabled:
                self.http_port = await stack.enter_async_context(
                    web.serving(self, host=settings.http.host, port=settings.http.port)
                )
            self._session = session = await stack.enter_async_context(new_session())
            sinks = build_sinks(settings, session)
            if not sinks:
                log.warning("sinks.none_enabled")
            self.dispatchers = {
                sink.name: Dispatcher(
                    sink=sink,
                    store=store,
                    concurrency=settings.sinks.enabled()[sink.name].concurrency,
                    retry=settings.retry,
                    metrics=self.metrics,
                    on_settled=self._on_settled,
                    summary_seconds=settings.log.summary_seconds,
                )
                for sink in sinks
            }
            self.people = people = People(
                settings=settings,
                store=store,
                directory=directory,
                columns=sink_columns(settings, list(self.dispatchers)),
            )
            await people.release_unmapped()
            self.ingest = Ingest(
                config=settings.mqtt,
                store=store,
                resolve=people.resolve,
                site_tz=settings.site.tz,
                max_batch=settings.store.max_batch,
                on_stored=self._on_stored,
                metrics=self.metrics,
                max_clock_skew_seconds=settings.site.max_clock_skew_seconds,
                name_of=people.name_of,
                time_limits=settings.site.time_limits,
                junk=JunkLimiter(
                    per_terminal=settings.store.rejected_per_terminal_per_minute,
                    total=settings.store.rejected_per_minute,
                ),
            )
            await self._serve(people, sources)

    async def _serve(self, people: People, sources: Sequence[Source]) -> None:
        assert self.ingest is not None
        assert self.store is not None
        store = self.store
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_requested.set)
        try:
            async with asyncio.TaskGroup() as tg:
                for name, dispatcher in self.dispatchers.items():
                    tg.create_task(
                        dispatcher.run(self._stop, grace_seconds=SHUTDOWN_GRACE_SECONDS),
                        name=f"dispatch[{name}]",
                    )
                # Ingest first: on stop, whatever it had not committed stays with the broker.
                background = [
                    tg.create_task(self.ingest.run(), name="ingest"),
                    tg.create_task(self._announce_ready(), name="ready"),
                    tg.create_task(self._reload_on_sighup(people), name="reload"),
                    tg.create_task(store.watch_other_writers(), name="repairs"),
                    tg.create_task(
                        self._heartbeat_forever(heartbeat.heartbeat_path(self.settings.store.path)),
                        name="heartbeat",
                    ),
                ]
                if people.directory.file is not None or sources:
                    background.append(tg.create_task(people.watch(), name="directory"))
                if sources:
                    assert self._session is not None
                    background.append(
                        tg.create_task(
                            people.sync_forever(self._session, sources), name="directory-sync"
                        )
                    )
                if (interval := systemd.watchdog_interval()) is not None:
                    background.append(
                        tg.create_task(systemd.watchdog_pings(interval), name="watchdog")
                    )
                if self.settings.reconcile.daily_at is not None:
                    assert self.store is not None
                    assert self._session is not None
                    background.append(
                        tg.create_task(
                            run_daily(
                                settings=self.settings,
                                store=self.store,
                                session=self._session,
                                stop=self._stop,
                                registry=self.metrics.registry,
                            ),
                            name="reconcile.daily",
                        )
                    )
                await self._stop.wait()
                log.info("bridge.stopping")
                systemd.notify("STOPPING=1")
                for task in background:
                    task.cancel()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
        log.info("bridge.stopped")

    async def _reload_on_sighup(self, people: People) -> None:
        """SIGHUP: re-read the directory, the credentials and the log level. Events are not
        touched: nothing is lost or sent again. Other changes need a restart."""
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            systemd.notify("RELOADING=1")
            try:
                self._apply_reload()
            except ConfigError as err:
                log.error("config.reload_failed", error=str(err), kept="running configuration")
            await people.reload()
            systemd.notify("READY=1")

    def _apply_reload(self) -> None:
        if self.config_path is None:
            return
        fresh = load_settings(self.config_path)
        for secret in fresh.secret_values():
            register_secret(secret)
        set_level(fresh.log.level)
        assert self._session is not None
        for sink in build_sinks(fresh, self._session):
            dispatcher = self.dispatchers.get(sink.name)
            if dispatcher is not None:
                dispatcher.replace_sink(sink)  # new credentials; a paused sink probes at once
        log.info("config.reloaded", applied=["credentials", "log.level", "directory"])

    async def _announce_ready(self) -> None:
        assert self.ingest is not None
        await self.ingest.connected.wait()
        self.ready.set()
        systemd.notify("READY=1")
        log.info("bridge.ready", sinks=list(self.dispatchers))

    def _on_settled(self, job: Job, state: str) -> None:
        if self.ingest is None or not self.settings.mqtt.ack_delivery:
            return
        if state in ("delivered", "dead", "held"):
            self.ingest.feedback.send(
                job.terminal,
                {
                    "id": job.source_id,
                    "status": state,
                    "sink": job.sink,
                    "action": job.action.value,
                },
            )

    async def _on_stored(self, results: Sequence[Stored]) -> None:
        for stored in results:
            fields = {"event_key": stored.key, "terminal": stored.terminal}
            if stored.status == "rejected":
                log.warning("event.rejected", reason=stored.reason)
            elif stored.status in ("duplicate", "redelivered"):
                log.info("event.duplicate", **fields, action=stored.action, reason=stored.status)
            else:
                if stored.status == "unmapped":
                    log.warning("event.unmapped", **fields, action=stored.action)
                else:
                    log.info("event.stored", **fields, action=stored.action)

    # --- what the web pages read (web.StatusSource) ---------------------------------------

    def readiness_problems(self) -> list[web.Problem]:
        """Why the bridge is not ready, each with since when; empty when it is."""
        problems: list[web.Problem] = []
        ingest, store = self.ingest, self.store
        if ingest is None or not ingest.connected.is_set():
            since = ingest.disconnected_since if ingest else None
            detail = ingest.last_error if ingest else "starting"
            problems.append({"check": "mqtt", "since": _iso(since), "detail": detail})
        if store is None:
            problems.append({"check": "database", "since": None, "detail": "not open yet"})
        elif store.write_error is not None:
            error, since = store.write_error
            problems.append({"check": "database", "since": _iso(since), "detail": error})
        for name, dispatcher in self.dispatchers.items():
            if dispatcher.paused_since is not None:
                problems.append(
                    {
                        "check": f"sink:{name}",
                        "since": _iso(dispatcher.paused_since),
                        "detail": "paused: credentials refused",
                    }
                )
        return problems

    def sink_states(self) -> dict[str, SinkState]:
        return {name: dispatcher.health.state() for name, dispatcher in self.dispatchers.items()}

    def current_heartbeat(self) -> heartbeat.Heartbeat:
        ingest = self.ingest
        connected = ingest is not None and ingest.connected.is_set()
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self._started_at,
            "written_at": time.time(),
            "mqtt": {
                "connected": connected,
                "since": None if ingest is None else ingest.disconnected_since,
                "last_error": None if ingest is None or connected else ingest.last_error,
            },
            "sinks": self.sink_states(),
        }

    async def _heartbeat_forever(self, path: Path) -> None:
        """Tell `clockin-bridge status` (another process) how the daemon is doing."""
        try:
            while True:
                await asyncio.to_thread(heartbeat.write, path, self.current_heartbeat())
                await asyncio.sleep(heartbeat.HEARTBEAT_SECONDS)
        finally:
            heartbeat.remove(path)  # stopped: `status` says not running, not "wedged"

    async def queue_status(self) -> QueueStatus | None:
        return None if self.store is None else await self.store.status(now=time.time())

    async def recent_errors(self) -> list[dict[str, object]]:
        return [] if self.store is None else await self.store.recent_errors()

    async def recent_events(self) -> list[dict[str, object]]:
        return [] if self.store is None else await self.store.recent_events()
