"""TimeTrack shifts, pure: the per-person state machine and the operator helpers.

TimeTrack stores attendances (from, to, break minutes), not punches, so the sink keeps each
person's open shift in the store's person_state (saved with the outcome, in one transaction):

    {"shift": {"from": iso, "break_minutes": 0, "break_from": null, "notes": [...]}}

plus, when present: "breaks" ([[from, to], ...], closed breaks, so minutes are summed exactly
and a resent break_end is recognised), "operator": true (a start an operator supplied, so the
max-age check no longer applies), "to": iso (an end an operator supplied with complete_shift:
the shift is closed and waits to be recorded), and, beside "shift", "unverified": true (a create
may have reached TimeTrack without its answer reaching us: search before creating again).

Nothing here guesses: where an event cannot be placed (a shift open longer than
max_shift_hours, an `out` with no shift that TimeTrack does not already hold) the job is HELD with
the reason and the state is left as it was, so nothing is lost and an operator decides
(complete_shift / start_shift, then requeue). Break events that cannot apply (no shift, no open
break) change nothing that would be sent and are ignored with the reason. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.delivery import Job, Result
from bridge.events import Action
from bridge.vendors.timetrack.wire import Attendance, aware_utc, show_time


class ShiftStateError(ValueError):
    """The saved state cannot be read as a shift (or an operator helper was misused)."""


# -- time --------------------------------------------------------------------------------------


def _aware(moment: datetime, what: str) -> datetime:
    try:
        return aware_utc(moment, what)
    except ValueError as err:
        raise ShiftStateError(str(err)) from None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _parse_iso(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        msg = f"{what} is not a timestamp: {value!r}"
        raise ShiftStateError(msg)
    try:
        return _aware(datetime.fromisoformat(value), what)
    except ValueError:
        msg = f"{what} is not a timestamp: {value!r}"
        raise ShiftStateError(msg) from None


# -- the shift ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shift:
    start: datetime
    notes: tuple[str, ...] = ()
    breaks: tuple[tuple[datetime, datetime], ...] = ()
    break_from: datetime | None = None
    end: datetime | None = None  # set by complete_shift: closed, waiting to be recorded
    operator: bool = False  # started by an operator (start_shift): no max-age check

    @property
    def break_minutes(self) -> int:
        seconds = sum((to - fr).total_seconds() for fr, to in self.breaks)
        return int((seconds + 30) // 60)  # whole minutes, half up, rounded once over the sum

    @classmethod
    def from_state(cls, raw: object) -> Shift:
        if not isinstance(raw, Mapping):
            msg = f"shift is not an object: {raw!r}"
            raise ShiftStateError(msg)
        notes = raw.get("notes") or []
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            msg = "shift.notes is not a list of strings"
            raise ShiftStateError(msg)
        breaks = []
        for pair in raw.get("breaks") or []:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                msg = f"shift.breaks holds {pair!r}"
                raise ShiftStateError(msg)
            breaks.append((_parse_iso(pair[0], "break start"), _parse_iso(pair[1], "break end")))
        break_from, end = raw.get("break_from"), raw.get("to")
        return cls(
            start=_parse_iso(raw.get("from"), "shift.from"),
            notes=tuple(notes),
            breaks=tuple(breaks),
            break_from=None if break_from is None else _parse_iso(break_from, "shift.break_from"),
            end=None if end is None else _parse_iso(end, "shift.to"),
            operator=bool(raw.get("operator", False)),
        )

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "from": _iso(self.start),
            "break_minutes": self.break_minutes,
            "break_from": None if self.break_from is None else _iso(self.break_from),
            "notes": list(self.notes),
        }
        if self.breaks:
            state["breaks"] = [[_iso(fr), _iso(to)] for fr, to in self.breaks]
        if self.operator:
            state["operator"] = True
        if self.end is not None:
            state["to"] = _iso(self.end)
        return state

    def with_note(self, note: str | None) -> Shift:
        note = (note or "").strip()
        return self if not note else _replace(self, notes=(*self.notes, note))

    def close_break(self, at: datetime) -> Shift:
        """End the open break (if any) at `at`; a break that would end before it began is
        dropped."""
        if self.break_from is None:
            return self
        breaks = self.breaks if at <= self.break_from else (*self.breaks, (self.break_from, at))
        return _replace(self, breaks=breaks, break_from=None)


def _replace(shift: Shift, **changes: Any) -> Shift:
    values = {name: getattr(shift, name) for name in Shift.__slots__}
    values.update(changes)
    return Shift(**values)


def read_state(state: Mapping[str, Any]) -> tuple[Shift | None, bool]:
    """The saved state → (the shift or None, unverified). Raises ShiftStateError."""
    if not isinstance(state, Mapping):
        msg = f"state is not an object: {state!r}"
        raise ShiftStateError(msg)
    raw = state.get("shift")
    shift = None if raw is None else Shift.from_state(raw)
    return shift, bool(state.get("unverified", False))


def shift_state(shift: Shift | None, *, unverified: bool = False) -> dict[str, Any]:
    state: dict[str, Any] = {} if shift is None else {"shift": shift.to_state()}
    if unverified and shift is not None:
        state["unverified"] = True
    return state


# -- the attendance ----------------------------------------------------------------------------


def attendance_of(shift: Shift, *, username: str, end: datetime) -> Attendance:
    closed = shift.close_break(end)
    return Attendance(
        username=username,
        start=shift.start,
        end=end,
        break_minutes=closed.break_minutes,
        notes=closed.notes,
    )


# -- the state machine -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """What one job does: a Result decided without TimeTrack, an attendance to record, or a
    search for an already recorded attendance ending at the job's time (an `out` with no
    shift: a resent `out`, or held)."""

    result: Result | None = None
    attendance: Attendance | None = None
    after: dict[str, Any] = field(default_factory=dict)  # the state once it is recorded
    done: str = ""  # the detail once it is recorded
    find_repeat_out: bool = False


def _held(text: str) -> Plan:
    return Plan(result=Result.held(text))  # state None: kept exactly as it was


def _ignored(text: str) -> Plan:
    return Plan(result=Result.delivered(f"ignored: {text}"))


def plan_job(state: Mapping[str, Any], job: Job, *, max_shift: timedelta) -> Plan:
    """The pure transition for one job. Raises ShiftStateError for an unreadable state.

    A shift closed by an operator (shift.to set) must be recorded before this is called.
    """
    shift, unverified = read_state(state)
    at = _aware(job.time, "job time")
    if shift is not None and shift.end is not None:
        msg = "a closed shift must be recorded first"
        raise ShiftStateError(msg)
    if job.action is Action.IN:
        return _plan_in(shift, job, at, max_shift)
    if job.action is Action.OUT:
        return _plan_out(shift, job, at, max_shift)
    return _plan_break(shift, job, at, max_shift, unverified=unverified)


def _plan_in(shift: Shift | None, job: Job, at: datetime, max_shift: timedelta) -> Plan:
    if shift is None:
        opened = Shift(start=at).with_note(job.note)
        return Plan(result=Result.delivered("shift opened", state=shift_state(opened)))
    since = show_time(shift.start)
    if at < shift.start:
        return _held(f"in at {show_time(at)} is earlier than the open shift (from {since})")
    if at - shift.start > max_shift:
        return _held(
            f"in at {show_time(at)} while a shift is open since {since}, longer than the max "
            f"shift; its end is unknown: complete_shift, then requeue"
        )
    return Plan(result=Result.duplicate(f"shift already open since {since} (swiped in twice)"))


def _plan_out(shift: Shift | None, job: Job, at: datetime, max_shift: timedelta) -> Plan:
    if shift is None:
        return Plan(find_repeat_out=True)
    since = show_time(shift.start)
    if at <= shift.start:
        return _held(f"out at {show_time(at)} is not after the open shift's start {since}")
    if at - shift.start > max_shift and not shift.operator:
        return _held(
            f"out at {show_time(at)} closes a shift open since {since}, longer than the max "
            f"shift (a missed out or in?): complete_shift or start_shift, then requeue"
        )
    attendance = attendance_of(shift.with_note(job.note), username=job.person, end=at)
    return Plan(
        attendance=attendance,
        after={},
        done=f"attendance recorded ({attendance.describe()})",
    )


def _plan_break(
    shift: Shift | None, job: Job, at: datetime, max_shift: timedelta, *, unverified: bool
) -> Plan:
    what = job.action.value
    if shift is None:
        return _ignored(f"{what} at {show_time(at)} with no open shift")
    if at < shift.start or at - shift.start > max_shift:
        return _ignored(
            f"{what} at {show_time(at)} does not fit the shift open since {show_time(shift.start)}"
        )
    keep = {"unverified": unverified}
    if job.action is Action.BREAK_START:
        if shift.break_from is not None:
            return Plan(
                result=Result.duplicate(f"break already started at {show_time(shift.break_from)}")
            )
        started = _replace(shift.with_note(job.note), break_from=at)
        return Plan(result=Result.delivered("break started", state=shift_state(started, **keep)))
    if shift.break_from is None:
        if any(to == at for _, to in shift.breaks):
            return Plan(result=Result.duplicate(f"break already ended at {show_time(at)}"))
        return _ignored(f"break_end at {show_time(at)} without a break_start; no minutes added")
    ended = shift.with_note(job.note).close_break(at)
    return Plan(
        result=Result.delivered(
            f"break ended; {ended.break_minutes} min so far", state=shift_state(ended, **keep)
        )
    )


# -- operator helpers (the commands calling them live elsewhere) -------------------------------


def complete_shift(state: Mapping[str, Any], *, to: datetime) -> dict[str, Any]:
    """Close the person's open shift at `to` (an operator's decision for a held shift).

    Returns the new state to save; the sink records the closed shift on the person's next
    delivery (requeue the held one) before handling it. A held `out` at exactly `to` then
    counts as delivered. An open break ends at `to`. Raises ShiftStateError.
    """
    shift, unverified = read_state(state)
    if shift is None:
        msg = "no open shift to complete (start_shift supplies a missing start)"
        raise ShiftStateError(msg)
    end = _aware(to, "to")
    if end <= shift.start:
        msg = f"to {show_time(end)} is not after the shift's start {show_time(shift.start)}"
        raise ShiftStateError(msg)
    closed = _replace(shift.close_break(end), end=end)
    return shift_state(closed, unverified=unverified)


def start_shift(
    state: Mapping[str, Any], *, from_: datetime, note: str | None = None
) -> dict[str, Any]:
    """Open a shift at `from_` for a held `out` that had none (an operator-supplied `in`).

    The max-age check does not apply to it; requeue the held `out` to record it.
    """
    shift, _ = read_state(state)
    if shift is not None:
        msg = f"a shift is already open since {show_time(shift.start)}"
        raise ShiftStateError(msg)
    opened = Shift(start=_aware(from_, "from_"), operator=True).with_note(note)
    return shift_state(opened)


def closed_attendance(state: Mapping[str, Any], *, username: str) -> Attendance | None:
    """The attendance of a shift an operator closed (complete_shift), or None."""
    shift, _ = read_state(state)
    if shift is None or shift.end is None:
        return None
    return attendance_of(shift, username=username, end=shift.end)
