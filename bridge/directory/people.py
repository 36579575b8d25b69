"""Who swiped: the merged directory (file + cached vendor sources) as the daemon uses it.

Maps badges to each sink's person id and name, picks up a changed file or a sync (its own or
the CLI's), and releases the events a new mapping makes deliverable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import structlog

from bridge.config import Settings
from bridge.directory.build import Source
from bridge.directory.file import DirectoryError, DirectoryFile, Person
from bridge.directory.live import LiveDirectory
from bridge.directory.sync import Outcome
from bridge.directory.sync import sync as sync_directory
from bridge.events import ClockEvent
from bridge.http import Session
from bridge.store import DaemonStore, PersonResolver, StoreWriteError
from bridge.store.records import Identified

log = structlog.get_logger("bridge.people")


def sink_columns(settings: Settings, sinks: Sequence[str]) -> dict[str, str]:
    """Sink name -> the directory column holding the person's id at that vendor."""
    enabled = settings.sinks.enabled()
    return {name: enabled[name].directory_column for name in sinks}


def make_resolver(
    columns: Mapping[str, str], directory: LiveDirectory | DirectoryFile | None
) -> PersonResolver:
    """The person's id at each sink: the event's own `user` when the terminal sent one, else
    the directory's entry for the badge."""

    def resolve(event: Identified) -> Mapping[str, str | None]:
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


async def open_directory(
    settings: Settings, store: DaemonStore, sources: Sequence[Source]
) -> LiveDirectory:
    """The file (if configured) merged with what the sources last synced into the cache, so
    badges map from the first event, through a vendor outage and across restarts."""
    path = settings.directory.path
    people = LiveDirectory(
        file=DirectoryFile(path) if path else None, sources=[source.name for source in sources]
    )
    await people.refresh(store, force=True)
    return people


class People:
    """The daemon's directory: lookups for ingest, reloads and syncs in the background."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: DaemonStore,
        directory: LiveDirectory,
        columns: Mapping[str, str],
    ) -> None:
        self._settings = settings
        self._store = store
        self.directory = directory
        self.resolve = make_resolver(columns, directory)
        self._failing: dict[str, str] = {}  # source -> error, logged once per spell
        self._reported: set[str] = set()  # problems already logged
        self.log_problems()

    def group_of(self, event: Identified) -> str | None:
        """The person's schedule group: their directory entry's inference.group_column."""
        column = self._settings.inference.group_column
        if column is None or event.badge is None:
            return None
        return _person_id(self.directory.current.lookup(event.badge), column)

    def name_of(self, event: ClockEvent) -> str | None:
        """The person's name for terminal feedback ("Good morning, Ana")."""
        if event.badge is None:
            return None
        entry = self.directory.current.lookup(event.badge)
        return entry.name if entry and entry.name else None

    async def release_unmapped(self) -> None:
        released = await self._store.release_unmapped(resolve=self.resolve)
        if released:
            log.info("event.mapped", deliveries=released)  # the store wakes the dispatchers

    async def watch(self) -> None:
        """Poll the file, and the cache for a sync another process (the CLI) ran. The store
        failing (a database outage) only delays that: the directory in use stays."""
        while True:
            await asyncio.sleep(self._settings.directory.reload_seconds)
            try:
                await self.reload()
            except StoreWriteError as err:
                log.debug("directory.reload_deferred", error=str(err))

    async def reload(self) -> None:
        """Pick up a changed directory file or synced sources; release the events they now map."""
        people = self.directory
        file_changed = False
        if people.file is not None:
            try:
                # DirectoryFile raises once per broken version and keeps the last good one.
                file_changed = await asyncio.to_thread(people.file.reload_if_changed)
            except DirectoryError as err:
                log.error("directory.error", error=str(err), kept="previous directory")  # noqa: TRY400 - a bad file, no traceback
        if not await people.refresh(self._store, force=file_changed):
            return
        current = people.current
        log.info(
            "directory.reloaded",
            people=len(current),
            problems=len(current.problems),
            file_changed=file_changed,
            revision=people.revision,
        )
        self.log_problems()
        await self.release_unmapped()

    def log_problems(self) -> None:
        """Each problem (a skipped row, a conflict) once, not at every reload."""
        problems = set(self.directory.current.problems)
        for problem in self.directory.current.problems:
            if problem not in self._reported:
                log.warning("directory.problem", problem=problem)
        self._reported = problems

    async def sync_forever(self, session: Session, sources: Sequence[Source]) -> None:
        """Sync the sources now and every directory.sync_minutes. A failing source keeps its
        last cached people; nothing here stops the bridge."""
        while True:
            try:
                outcomes = await sync_directory(self._store, session, sources)
            except Exception:  # the loop's boundary: logged, and the next round tries again
                log.exception("directory.sync_failed")
            else:
                self._log_sync(outcomes)
                await self.reload()
            await asyncio.sleep(self._settings.directory.sync_minutes * 60)

    def _log_sync(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            if not outcome.ok:
                if outcome.source not in self._failing:
                    log.warning(
                        "directory.source_failed",
                        source=outcome.source,
                        error=outcome.error,
                        kept="last synced people",
                    )
                self._failing[outcome.source] = outcome.error or ""
                continue
            if self._failing.pop(outcome.source, None) is not None:
                log.info("directory.source_recovered", source=outcome.source)
            if outcome.changed:
                log.info("directory.synced", source=outcome.source, records=outcome.records)
