"""'Work available for sink S': how the store tells the dispatchers that a commit made a
delivery due, instead of every writer knowing every dispatcher."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class WorkSignal:
    """One asyncio.Event per sink, set by the store after a commit that may have made a
    delivery of that sink due (or of every sink, when the commit does not say which)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, sink: str) -> asyncio.Event:
        """The event a sink's dispatcher waits on (and clears before it looks)."""
        return self._events.setdefault(sink, asyncio.Event())

    def notify(self, sinks: Iterable[str] | None = None) -> None:
        """Work may be due for `sinks` (None: for every sink)."""
        for sink in self._events if sinks is None else sinks:
            self.event(sink).set()
