"""Wires ingest, store, dispatchers and sinks together and owns the daemon's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from bridge import __version__
from bridge.backend import beat_forever, opened_store
from bridge.config import ConfigError, Settings, load_settings
from bridge.directory.build import Source, build_sources
from bridge.directory.live import LiveDirectory
from bridge.directory.people import People, open_directory, sink_columns
from bridge.dispatch.health import SinkState
from bridge.dispatch.pump import Dispatcher
from bridge.http import Session, new_session
from bridge.ingest import Ingest
from bridge.ingest.feedback import Feedback
from bridge.ingest.junk import JunkLimiter
from bridge.ops import heartbeat, systemd, web
from bridge.ops.logs import register_secret, set_level
from bridge.ops.metrics import Metrics
from bridge.reconcile.daily import run_daily
from bridge.store import DaemonStore, QueueStatus, RetentionPolicy
from bridge.store.postgres import PostgresStore
from bridge.vendors.registry import KEEPS_STATE, build_sinks

log = structlog.get_logger("bridge.app")

SHUTDOWN_GRACE_SECONDS = 10.0


# What a SIGHUP applies; every other change to the config takes a restart.
RELOADED_SECTIONS = frozenset({"log", "directory"})


def _needs_restart(running: Settings, fresh: Settings) -> list[str]:
    """The config sections that changed but only take effect after a restart (sinks count
    when more than their credentials changed)."""
    changed = []
    for name in type(running).model_fields:
        if name in RELOADED_SECTIONS:
            continue
        before, after = getattr(running, name), getattr(fresh, name)
        if name == "sinks":
            before, after = _without_secrets(before), _without_secrets(after)
        if before != after:
            changed.append(name)
    return changed


def _without_secrets(section: object) -> object:
    dump = section.model_dump() if hasattr(section, "model_dump") else section
    if isinstance(dump, dict):
        return {
            key: _without_secrets(value)
            for key, value in dump.items()
            if not any(word in key for word in ("key", "secret", "password", "token"))
        }
    return dump


def _iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()


@dataclass(frozen=True, slots=True)
class Running:
    """The daemon's components while it runs: built once by Bridge.run, closed in reverse."""

    store: DaemonStore
    session: Session
    people: People
    feedback: Feedback  # one publisher of replies to terminals, for ingest and dispatch
    ingest: Ingest
    dispatchers: dict[str, Dispatcher]
    sources: Sequence[Source]


class Bridge:
    """The running daemon. `stop()` (or SIGTERM/SIGINT) ends `run()` cleanly."""

    def __init__(self, settings: Settings, *, config_path: Path | None = None) -> None:
        self.settings = settings
        self.config_path = config_path  # re-read on SIGHUP
        self._reload_requested = asyncio.Event()
        self._stop = asyncio.Event()
        self._running: Running | None = None
        self.ready = asyncio.Event()
        self.metrics = Metrics()
        self.http_port: int | None = None
        self._started_at = time.time()

    # What tests and the status views look at; None until run() has built it.
    @property
    def store(self) -> DaemonStore | None:
        return None if self._running is None else self._running.store

    @property
    def ingest(self) -> Ingest | None:
        return None if self._running is None else self._running.ingest

    @property
    def people(self) -> People | None:
        return None if self._running is None else self._running.people

    @property
    def dispatchers(self) -> dict[str, Dispatcher]:
        return {} if self._running is None else self._running.dispatchers

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        settings = self.settings
        sources = build_sources(settings)  # ConfigError: an enabled source lacks credentials
        async with contextlib.AsyncExitStack() as stack:
            # The SQLite file, or the PostgreSQL database shared with other bridges.
            store = await stack.enter_async_context(opened_store(settings))
            # The directory: the CSV file and the vendors' user lists, cached in the store so
            # it carries on through a vendor outage and across restarts.
            directory = await open_directory(settings, store, sources)
            recovered = await store.recover_inflight()
            if recovered:
                log.warning("delivery.recovered", count=recovered)
            session = await stack.enter_async_context(new_session())
            running = self._build(store, session, directory, sources)
            self._running = running
            await running.people.release_unmapped()
            if settings.http.enabled:
                self.http_port = await stack.enter_async_context(
                    web.serving(self, host=settings.http.host, port=settings.http.port)
                )
            await self._serve(running)

    def _build(
        self,
        store: DaemonStore,
        session: Session,
        directory: LiveDirectory,
        sources: Sequence[Source],
    ) -> Running:
        settings = self.settings
        feedback = Feedback(ack_topic=settings.mqtt.ack_topic)
        sinks = build_sinks(settings, session)
        if not sinks:
            log.warning("sinks.none_enabled")
        dispatchers = {
            sink.name: Dispatcher(
                sink=sink,
                store=store,
                concurrency=settings.sinks.enabled()[sink.name].concurrency,
                retry=settings.retry,
                metrics=self.metrics,
                replies=feedback if settings.mqtt.ack_delivery else None,
                summary_seconds=settings.log.summary_seconds,
                hold_late=sink.name in KEEPS_STATE,
                # A shared store's claims are leases: renewed well before they run out.
                renew_seconds=None
                if settings.store.url is None
                else settings.store.lease_seconds / 3,
            )
            for sink in sinks
        }
        people = People(
            settings=settings,
            store=store,
            directory=directory,
            columns=sink_columns(settings, list(dispatchers)),
        )
        ingest = Ingest(
            config=settings.mqtt,
            store=store,
            resolve=people.resolve,
            site_tz=settings.site.tz,
            group_of=people.group_of,
            max_batch=settings.store.max_batch,
            feedback=feedback,
            metrics=self.metrics,
            max_clock_skew_seconds=settings.site.max_clock_skew_seconds,
            name_of=people.name_of,
            time_limits=settings.site.time_limits,
            junk=JunkLimiter(
                per_terminal=settings.store.rejected_per_terminal_per_minute,
                total=settings.store.rejected_per_minute,
            ),
        )
        self.metrics.watch_database(store.integrity)
        return Running(store, session, people, feedback, ingest, dispatchers, sources)

    async def _serve(self, running: Running) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_requested.set)
        try:
            async with asyncio.TaskGroup() as tg:
                for name, dispatcher in running.dispatchers.items():
                    tg.create_task(
                        dispatcher.run(self._stop, grace_seconds=SHUTDOWN_GRACE_SECONDS),
                        name=f"dispatch[{name}]",
                    )
                # Ingest first: on stop, whatever it had not committed stays with the broker.
                background = [
                    tg.create_task(running.ingest.run(), name="ingest"),
                    tg.create_task(self._announce_ready(running), name="ready"),
                    tg.create_task(self._reload_on_sighup(running), name="reload"),
                    tg.create_task(running.store.watch_other_writers(), name="repairs"),
                    tg.create_task(running.store.check_integrity_forever(), name="integrity"),
                    tg.create_task(
                        beat_forever(running.store, running.ingest.connected.is_set),
                        name="instance-heartbeat",
                    ),
                    tg.create_task(
                        running.store.retain_forever(self._retention()), name="retention"
                    ),
                    tg.create_task(
                        self._heartbeat_forever(heartbeat.heartbeat_path(self.settings.store.path)),
                        name="heartbeat",
                    ),
                ]
                background += self._optional_tasks(tg, running)
                await self._stop.wait()
                log.info("bridge.stopping")
                systemd.notify("STOPPING=1")
                for task in background:
                    task.cancel()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
        log.info("bridge.stopped")

    def _optional_tasks(self, tg: asyncio.TaskGroup, running: Running) -> list[asyncio.Task[None]]:
        """The background work only some configurations have."""
        people, sources = running.people, running.sources
        tasks = []
        if people.directory.file is not None or sources:
            tasks.append(tg.create_task(people.watch(), name="directory"))
        if sources:
            sync = people.sync_forever(running.session, sources)
            tasks.append(tg.create_task(sync, name="directory-sync"))
        if (interval := systemd.watchdog_interval()) is not None:
            tasks.append(tg.create_task(systemd.watchdog_pings(interval), name="watchdog"))
        if self.settings.reconcile.daily_at is not None:
            daily = run_daily(
                settings=self.settings,
                store=running.store,
                session=running.session,
                stop=self._stop,
                registry=self.metrics.registry,
            )
            tasks.append(tg.create_task(daily, name="reconcile.daily"))
        return tasks

    def _retention(self) -> RetentionPolicy:
        """What history is pruned when quiet (bridge.store.retention). A pruned event's key is
        kept at least as long as a delivery may be retried, so a resend is never sent twice."""
        store = self.settings.store
        return RetentionPolicy(
            retain_days=store.retain_days,
            dedupe_days=max(store.dedupe_days, self.settings.retry.max_age_days),
            rejected_retain_days=store.rejected_retain_days,
            archive_dir=store.archive_dir,
        )

    async def _reload_on_sighup(self, running: Running) -> None:
        """SIGHUP: re-read the directory, the credentials and the log level. Events are not
        touched: nothing is lost or sent again. Other changes need a restart."""
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            systemd.notify("RELOADING=1")
            try:
                self._apply_reload(running)
            except ConfigError as err:
                log.error("config.reload_failed", error=str(err), kept="running configuration")  # noqa: TRY400 - a bad file
            await running.people.reload()
            systemd.notify("READY=1")

    def _apply_reload(self, running: Running) -> None:
        if self.config_path is None:
            return
        fresh = load_settings(self.config_path)
        for secret in fresh.secret_values():
            register_secret(secret)
        set_level(fresh.log.level)
        for sink in build_sinks(fresh, running.session):
            dispatcher = running.dispatchers.get(sink.name)
            if dispatcher is not None:
                dispatcher.replace_sink(sink)  # new credentials; a paused sink probes at once
        ignored = _needs_restart(self.settings, fresh)
        if ignored:  # said, not silently dropped
            log.warning("config.restart_needed", changed=ignored)
        log.info("config.reloaded", applied=["credentials", "log.level", "directory"])

    async def _announce_ready(self, running: Running) -> None:
        await running.ingest.connected.wait()
        self.ready.set()
        systemd.notify("READY=1")
        log.info("bridge.ready", sinks=list(running.dispatchers))

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
        elif store.integrity is not None and store.integrity.damage is not None:
            damage, since = store.integrity.damage, store.integrity.damaged_at
            detail = f"integrity check failed ({damage}): writes refused, file left untouched"
            problems.append({"check": "database", "since": _iso(since), "detail": detail})
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

    async def instances(self) -> list[dict[str, object]]:
        store = self.store
        if not isinstance(store, PostgresStore):
            return []
        return list(await store.instances())
