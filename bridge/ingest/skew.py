"""Terminal clocks that disagree with the gateway's: logged and counted, never rewritten.

A payload's time is what payroll gets, so a terminal whose clock is off by more than
`site.max_clock_skew_seconds` is reported (once when it drifts off, once when it is back), and
every such event is counted per terminal. A terminal replaying a backlog after an outage looks
the same, which is one more reason not to "correct" anything.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import structlog

from bridge.events import ClockEvent

log = structlog.get_logger("bridge.skew")


class ClockSkewWatch:
    def __init__(self, *, max_skew_seconds: float) -> None:
        self._max = max_skew_seconds
        self.skewed_events: Counter[str] = Counter()
        self._skewed_terminals: set[str] = set()

    def check(
        self, event: ClockEvent, *, received_at: datetime, terminal: str | None = None
    ) -> bool:
        """True when the event's time is further off than allowed.

        `terminal` is the name to track the event's terminal under: the ingest passes its
        bounded metrics label, so made-up terminal ids cannot grow what is remembered here.
        """
        if not event.time_given:
            return False
        skew = (event.time - received_at).total_seconds()
        terminal = event.terminal if terminal is None else terminal
        if abs(skew) > self._max:
            self.skewed_events[terminal] += 1
            if terminal not in self._skewed_terminals:
                self._skewed_terminals.add(terminal)
                log.warning(
                    "terminal.clock_skew",
                    terminal=terminal,
                    skew_seconds=round(skew, 1),
                    limit_seconds=self._max,
                )
            return True
        if terminal in self._skewed_terminals:
            self._skewed_terminals.discard(terminal)
            log.info("terminal.clock_ok", terminal=terminal, skew_seconds=round(skew, 1))
        return False
