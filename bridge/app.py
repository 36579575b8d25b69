"""Wires ingest, store, dispatchers and sinks together and owns the daemon's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import aiohttp
import structlog

from bridge import systemd, web
from bridge.config import ConfigError, Settings, load_settings
from bridge.directory import DirectoryError, DirectoryFile, Person
from bridge.directory_sources import LiveDirectory, Outcome, Source, build_sources
from bridge.directory_sources import sync as sync_directory
from bridge.dispatch import Dispatcher
from bridge.events import ClockEvent
from bridge.ingest import Ingest
from bridge.logs import register_secret, set_level
from bridge.metrics import Metrics
from bridge.reconcile.daily import run_daily
from bridge.sinks.base import Job, Sink
from bridge.sinks.go2clock import Go2ClockSink
from bridge.sinks.mctime import McTimeSink
from bridge.sinks.timetrack import TimeTrackSink
from bridge.store import PersonResolver, Store, Stored

log = structlog.get_logger("bridge.app")

SHUTDOWN_GRACE_SECONDS = 10.0


def build_sinks(settings: Settings, session: aiohttp.ClientSession) -> list[Sink]:
    sinks: list[Sink] = []
    config, site_tz = settings.sinks, settings.site.tz
    if config.go2clock.enabled:
        sinks.append(
            Go2ClockSink(session=session, config=config.go2clock, account_tz=settings.go2clock_tz)
        )
    if config.mctime.enabled:
        sinks.append(McTimeSink(session=session, config=config.mctime, site_tz=site_tz))
    if config.timetrack.enabled:
        sinks.append(TimeTrackSink(session=session, config=config.timetrack, site_tz=site_tz))
    return sinks


def make_resolver(
    columns: Mapping[str, str], directory: LiveDirectory | DirectoryFile | None
) -> PersonResolver:
    """The person's id at each sink (sink name -> directory column holding it): the event's
    own `user` when the terminal sent one, else the directory's entry for the badge."""

    def resolve(event: ClockEvent) -> Mapping[str, str | None]:
        if event.user is not None:
            return dict.fromkeys(columns, event.user)
        entry = None
        if event.badge is not None and directory is not None:
            entry = directory.current.lookup(event.badge)
        return {sink: _person_id(entry, column) for sink, column in columns.items()}

    return resolve


def _person_id(entry: Person | None, column: str) -> str | None:
    if entry is None:
        return None
    value = entry.userid if column == "userid" else entry.extra.get(column)
    return value or None


def make_name_lookup(
    directory: LiveDirectory | DirectoryFile | None,
) -> Callable[[ClockEvent], str | None]:
    """The person's name for terminal feedback ("Good morning, Ana")."""

    def name_of(event: ClockEvent) -> str | None:
        if directory is None or event.badge is None:
            return None
        entry = directory.current.lookup(event.badge)
        return entry.name if entry and entry.name else None

    return name_of


class Bridge:
    """The running daemon. `stop()` (or SIGTERM/SIGINT) ends `run()` cleanly."""

    def __init__(self, settings: Settings, *, config_path: Path | None = None):
        self.settings = settings
        self.config_path = config_path  # re-read on SIGHUP
        self._reload_requested = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._stop = asyncio.Event()
        self.dispatchers: dict[str, Dispatcher] = {}
        self.ingest: Ingest | None = None
        self.store: Store | None = None
        self.ready = asyncio.Event()
        self.metrics = Metrics()
        self.http_port: int | None = None
        self.directory: LiveDirectory | None = None
        self._directory_failing: dict[str, str] = {}  # source -> error, logged once per spell
        self._directory_reported: set[str] = set()  # problems already logged

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        settings = self.settings
        directory = DirectoryFile(settings.directory.path) if settings.directory.path else None
        sources = build_sources(settings)  # ConfigError: an enabled source lacks credentials
        async with contextlib.AsyncExitStack() as stack:
            self.store = store = await stack.enter_async_context(
                Store.open(
                    settings.store.path,
                    site_tz=settings.site.tz,
                    window_seconds=settings.dedupe.window_seconds,
                )
            )
            # The file merged with the sources' cached people: badges map from the first event,
            # through a vendor outage and across restarts.
            self.directory = people = LiveDirectory(
                file=directory, sources=[source.name for source in sources]
            )
            await people.refresh(store, force=True)
            self._log_directory_problems(people)
            recovered = await store.recover_inflight()
            if recovered:
                log.warning("delivery.recovered", count=recovered)
            if settings.http.enabled:
                self.http_port = await stack.enter_async_context(
                    web.serving(self, host=settings.http.host, port=settings.http.port)
                )
            self._session = session = await stack.enter_async_context(aiohttp.ClientSession())
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
            enabled = settings.sinks.enabled()
            resolve = make_resolver(
                {name: enabled[name].directory_column for name in self.dispatchers}, people
            )
            await self._release_unmapped(resolve)
            self.ingest = Ingest(
                config=settings.mqtt,
                store=store,
                resolve=resolve,
                site_tz=settings.site.tz,
                max_batch=settings.store.max_batch,
                on_stored=self._on_stored,
                metrics=self.metrics,
                max_clock_skew_seconds=settings.site.max_clock_skew_seconds,
                name_of=make_name_lookup(people),
            )
            await self._serve(people, resolve, sources)

    async def _serve(
        self, people: LiveDirectory, resolve: PersonResolver, sources: Sequence[Source]
    ) -> None:
        assert self.ingest is not None
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
                    tg.create_task(self._reload_on_sighup(people, resolve), name="reload"),
                ]
                if people.file is not None or sources:
                    background.append(
                        tg.create_task(self._watch_directory(people, resolve), name="directory")
                    )
                if sources:
                    background.append(
                        tg.create_task(
                            self._sync_directory(people, resolve, sources), name="directory-sync"
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

    async def _reload_on_sighup(self, people: LiveDirectory, resolve: PersonResolver) -> None:
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
            await self._reload_directory(people, resolve)
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
        woke = False
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
                woke = True
        if woke:
            for dispatcher in self.dispatchers.values():
                dispatcher.wake()

    async def _release_unmapped(self, resolve: PersonResolver) -> None:
        assert self.store is not None
        released = await self.store.release_unmapped(resolve=resolve)
        if released:
            log.info("event.mapped", deliveries=released)
            for dispatcher in self.dispatchers.values():
                dispatcher.wake()

    async def _watch_directory(self, people: LiveDirectory, resolve: PersonResolver) -> None:
        """Poll the file, and the cache for a sync another process (the CLI) ran."""
        while True:
            await asyncio.sleep(self.settings.directory.reload_seconds)
            await self._reload_directory(people, resolve)

    async def _reload_directory(self, people: LiveDirectory, resolve: PersonResolver) -> None:
        """Pick up a changed directory file or synced sources; release the events they now map."""
        assert self.store is not None
        file_changed = False
        if people.file is not None:
            try:
                # DirectoryFile raises once per broken version and keeps the last good one.
                file_changed = await asyncio.to_thread(people.file.reload_if_changed)
            except DirectoryError as err:
                log.error("directory.error", error=str(err), kept="previous directory")
        if not await people.refresh(self.store, force=file_changed):
            return
        current = people.current
        log.info(
            "directory.reloaded",
            people=len(current),
            problems=len(current.problems),
            file_changed=file_changed,
            revision=people.revision,
        )
        self._log_directory_problems(people)
        await self._release_unmapped(resolve)

    def _log_directory_problems(self, people: LiveDirectory) -> None:
        """Each problem (a skipped row, a conflict) once, not at every reload."""
        problems = set(people.current.problems)
        for problem in people.current.problems:
            if problem not in self._directory_reported:
                log.warning("directory.problem", problem=problem)
        self._directory_reported = problems

    async def _sync_directory(
        self, people: LiveDirectory, resolve: PersonResolver, sources: Sequence[Source]
    ) -> None:
        """Sync the sources now and every directory.sync_minutes. A failing source keeps its
        last cached people; nothing here stops the bridge."""
        assert self.store is not None
        assert self._session is not None
        while True:
            try:
                outcomes = await sync_directory(self.store, self._session, sources)
            except Exception:  # the loop's boundary: logged, and the next round tries again
                log.exception("directory.sync_failed")
            else:
                self._log_sync(outcomes)
                await self._reload_directory(people, resolve)
            await asyncio.sleep(self.settings.directory.sync_minutes * 60)

    def _log_sync(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            if not outcome.ok:
                if outcome.source not in self._directory_failing:
                    log.warning(
                        "directory.source_failed",
                        source=outcome.source,
                        error=outcome.error,
                        kept="last synced people",
                    )
                self._directory_failing[outcome.source] = outcome.error or ""
                continue
            if self._directory_failing.pop(outcome.source, None) is not None:
                log.info("directory.source_recovered", source=outcome.source)
            if outcome.changed:
                log.info("directory.synced", source=outcome.source, records=outcome.records)
