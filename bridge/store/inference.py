"""Pure rules for a swipe without an action, and for the double swipe (duplicate layer 2).

A swipe without an action is attached to a shift, never to a calendar day (FIELD-NOTES §1:
toggling across days lets one missed punch invert every later pair):

- by default, the shift is bounded by `max_shift`: a swipe toggles from the same person's
  previous swipe only when that one is less than `max_shift` earlier; otherwise it is `in`;
- within a scheduled window (`ShiftWindow`), the first swipe is `in`, one in the window's
  closing part is `out`, and those in between alternate `break_start`/`break_end` (or toggle).

The store asks `InferenceRules.lookback` how far back the previous swipe may be, reads the
latest one since then, and asks `InferenceRules.infer` for the action.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bridge.events import Action

# A swipe with no button pressed means "the other state" from the person's previous event.
_TOGGLE = {
    Action.IN: Action.OUT,
    Action.OUT: Action.IN,
    Action.BREAK_START: Action.BREAK_END,
    Action.BREAK_END: Action.OUT,
}
# Inside a scheduled window, between the first swipe and the closing part: breaks.
_BREAKS = {
    Action.IN: Action.BREAK_START,
    Action.OUT: Action.IN,  # clocked out early (a button pressed): back in
    Action.BREAK_START: Action.BREAK_END,
    Action.BREAK_END: Action.BREAK_START,
}
DEFAULT_MAX_SHIFT = timedelta(hours=16)


def infer_action(
    previous: tuple[Action, datetime] | None,
    *,
    at: datetime,
    window_seconds: float,
    max_shift: timedelta = DEFAULT_MAX_SHIFT,
) -> Action:
    """The action of a swipe without one, from the same person's previous event.

    A swipe inside the double-swipe window repeats the previous action (so it is recognised as a
    duplicate), rather than toggling the person straight back out. A previous event `max_shift`
    or more earlier belongs to a shift that is over (its `out` was missed, or it was one): `in`.
    """
    if previous is None:
        return Action.IN
    action, when = previous
    if abs((at - when).total_seconds()) <= window_seconds:
        return action
    if at - when >= max_shift:
        return Action.IN
    return _TOGGLE[action]


class Between(enum.StrEnum):
    """What the swipes between a scheduled window's first and its closing part are."""

    BREAKS = "breaks"  # break_start, break_end, break_start, ...
    TOGGLE = "toggle"  # out, in, out, ... (as without a schedule)


@dataclass(frozen=True)
class ShiftWindow:
    """A scheduled shift: site-local `start` to `end` (an `end` not after `start` crosses
    midnight), open from `start - margin_before` to `end + margin_after`; its closing part,
    where a swipe is `out`, runs from `end - margin_before`. `terminals`: None for all."""

    name: str
    start: time
    end: time
    margin_before: timedelta = timedelta(0)
    margin_after: timedelta = timedelta(0)
    terminals: frozenset[str] | None = None
    between: Between = Between.BREAKS
    groups: frozenset[str] | None = None

    def applies_to(self, terminal: str, group: str | None) -> bool:
        if self.terminals is not None and terminal not in self.terminals:
            return False
        return self.groups is None or group in self.groups

    def occurrence(self, at: datetime, tz: ZoneInfo) -> tuple[datetime, datetime] | None:
        """(opens, closing part begins) of this window's occurrence holding `at`, or None."""
        local_day = at.astimezone(tz).date()
        for day in (local_day, local_day - timedelta(days=1), local_day + timedelta(days=1)):
            start = _at(day, self.start, tz)
            end_day = day if self.end > self.start else day + timedelta(days=1)
            end = _at(end_day, self.end, tz)
            opens, closes = start - self.margin_before, end + self.margin_after
            if opens <= at <= closes:
                return opens, end - self.margin_before
        return None


def _at(day: date, clock: time, tz: ZoneInfo) -> datetime:
    """A site-local wall time on `day` as UTC (a time skipped by DST moves forward by the gap,
    one repeated by it is its first occurrence: zoneinfo's fold=0)."""
    return datetime.combine(day, clock, tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True)
class InferenceRules:
    """How the store infers the action of a swipe without one (see the module's doc)."""

    tz: ZoneInfo  # the site's: scheduled windows are in its wall time
    window_seconds: float = 60.0
    max_shift: timedelta = DEFAULT_MAX_SHIFT
    shifts: tuple[ShiftWindow, ...] = ()

    def window_for(
        self, at: datetime, terminal: str, group: str | None = None
    ) -> tuple[ShiftWindow, datetime] | None:
        """The first configured window (in config order) open at `at` for `terminal` and a
        person of `group`, with the time its occurrence opens."""
        for shift in self.shifts:
            if not shift.applies_to(terminal, group):
                continue
            occurrence = shift.occurrence(at, self.tz)
            if occurrence is not None:
                return shift, occurrence[0]
        return None

    def lookback(self, at: datetime, terminal: str, group: str | None = None) -> datetime:
        """The earliest time the previous swipe that decides this one may have: the opening
        of the scheduled window holding it, else `at - max_shift` (one earlier is `in`
        anyway). The double-swipe window reaches back further if it is longer."""
        window = self.window_for(at, terminal, group)
        since = window[1] if window is not None else at - self.max_shift
        return min(since, at - timedelta(seconds=self.window_seconds))

    def infer(
        self,
        previous: tuple[Action, datetime] | None,
        *,
        at: datetime,
        terminal: str,
        group: str | None = None,
    ) -> Action:
        """The action of a swipe without one at `at`, from the person's latest event since
        `lookback(at, terminal, group)` (None: none)."""
        window = self.window_for(at, terminal, group)
        if window is None:
            return infer_action(
                previous, at=at, window_seconds=self.window_seconds, max_shift=self.max_shift
            )
        shift, opens = window
        if previous is not None:
            action, when = previous
            if abs((at - when).total_seconds()) <= self.window_seconds:
                return action  # a double swipe: layer 2 recognises the repeat
            if when < opens:
                previous = None  # before this occurrence: another shift's
        if previous is None:
            return Action.IN
        occurrence = shift.occurrence(at, self.tz)
        if occurrence is not None and at >= occurrence[1]:
            return Action.OUT
        table = _BREAKS if shift.between is Between.BREAKS else _TOGGLE
        return table[previous[0]]

    def late_swipe_problem(
        self,
        action: Action,
        *,
        at: datetime,
        group: str | None,
        later: tuple[Action, datetime, str],
    ) -> str | None:
        """Why a swipe at `at` (decided `action`) must wait for an operator, if it does: it
        arrived after the person's next swipe `later` (action, time, terminal), whose direction
        was inferred without it and would now be inferred otherwise. Stored directions are never
        rewritten (the next one may be at a vendor already), so this one is held instead."""
        later_action, later_time, later_terminal = later
        would_be = self.infer((action, at), at=later_time, terminal=later_terminal, group=group)
        if would_be is later_action:
            return None
        local = at.astimezone(self.tz).isoformat(timespec="seconds")
        later_local = later_time.astimezone(self.tz).isoformat(timespec="seconds")
        return (
            f"late: this {action} at {local} arrived after the {later_action} at {later_local}"
            f" was inferred without it; booking it would make that one {would_be}"
        )
