"""Pure comparison: what the bridge delivered against what the vendor holds. No I/O.

Go2Clock holds punches: compared one by one on (userid, checktime as sent). McTime, TimeTrack
and Q2 hold time entries built from in/out/break sequences: the bridge's delivered events of
each person are turned into the entries they must have produced (`entries_from`, the same
rules as the sinks: a second `in` while clocked in changes nothing, an open break ends with
the `out`), then compared on (person, start), with the end and the breaks.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bridge.events import Action


class Kind(enum.StrEnum):
    MISSING = "missing"  # the bridge delivered it; the vendor does not hold it
    EXTRA = "extra"  # the vendor holds it; the bridge never sent it (entered elsewhere)
    DIFFERENT = "different"  # both hold it, with a different checktype / end / breaks


@dataclass(frozen=True, slots=True)
class Punch:
    person: str
    checktime: str  # "YYYY-MM-DD HH:MM:SS", the account's wall clock, as sent
    checktype: int
    delivery_id: int | None = None  # the bridge's side
    delivered: bool = True  # False: known to the bridge but not (yet) delivered

    @property
    def day(self) -> str:
        return self.checktime[:10]


@dataclass(frozen=True, slots=True)
class Entry:
    """A time entry / attendance / time card. Times are aware UTC, whole seconds. `breaks` and
    `break_minutes` are None where the vendor does not hold them (then they are not compared)."""

    person: str
    start: datetime
    end: datetime
    breaks: tuple[tuple[datetime, datetime], ...] | None = None
    break_minutes: int | None = None
    delivery_ids: tuple[int, ...] = ()
    ref: str | None = None  # the vendor's id for it

    def describe(self) -> str:
        text = f"{_hms(self.start)}-{_hms(self.end)}"
        if self.breaks:
            text += " breaks " + ",".join(f"{_hms(a)}-{_hms(b)}" for a, b in self.breaks)
        if self.break_minutes:
            text += f" break {self.break_minutes} min"
        return text


def _hms(moment: datetime) -> str:
    return moment.strftime("%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    person: str
    day: str
    bridge: str | None  # what the bridge delivered, as text
    vendor: str | None  # what the vendor holds, as text
    delivery_ids: tuple[int, ...] = ()


@dataclass(slots=True)
class Comparison:
    findings: list[Finding] = field(default_factory=list)
    matched: dict[tuple[str, str], int] = field(default_factory=dict)  # (person, day) -> n

    def match(self, person: str, day: str) -> None:
        self.matched[(person, day)] = self.matched.get((person, day), 0) + 1


# -- punches (Go2Clock) ------------------------------------------------------------------------


def person_key(person: object) -> str:
    """Go2Clock returns numeric userids as numbers: "007" was sent, 7 comes back."""
    text = str(person).strip()
    return str(int(text)) if text.isdigit() else text


def _punch_text(punch: Punch) -> str:
    return f"{punch.checktime} checktype {punch.checktype}"


def compare_punches(bridge: Iterable[Punch], vendor: Iterable[Punch]) -> Comparison:
    """`bridge`: every delivery of the sink in the window (delivered or not); `vendor`: what
    the download returned. A vendor punch matching an undelivered delivery is not extra."""
    known: dict[tuple[str, str], Punch] = {}
    for punch in bridge:
        key = (person_key(punch.person), punch.checktime)
        if punch.delivered or key not in known:
            known[key] = punch
    held: dict[tuple[str, str], list[Punch]] = {}
    for punch in vendor:
        held.setdefault((person_key(punch.person), punch.checktime), []).append(punch)
    result = Comparison()
    for key, ours in sorted(known.items()):
        theirs = held.pop(key, [])
        if not ours.delivered:
            continue
        ids = () if ours.delivery_id is None else (ours.delivery_id,)
        if not theirs:
            result.findings.append(
                Finding(Kind.MISSING, key[0], ours.day, _punch_text(ours), None, ids)
            )
        elif all(p.checktype != ours.checktype for p in theirs):
            vendor_text = ", ".join(_punch_text(p) for p in theirs)
            result.findings.append(
                Finding(Kind.DIFFERENT, key[0], ours.day, _punch_text(ours), vendor_text, ids)
            )
        else:
            result.match(key[0], ours.day)
    for key, theirs in sorted(held.items()):
        for punch in theirs:
            result.findings.append(Finding(Kind.EXTRA, key[0], punch.day, None, _punch_text(punch)))
    return result


# -- entries (McTime, TimeTrack, Q2) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivered:
    """One delivered event of one person, as the store lists it."""

    person: str
    action: Action
    time: datetime  # aware UTC
    delivery_id: int


def entries_from(events: Iterable[Delivered]) -> list[Entry]:
    """The closed entries a person's delivered in/out/break sequence produced. An `in` while
    clocked in, a break without a clock, and an `out` without an `in` change nothing."""
    entries: list[Entry] = []
    by_person: dict[str, list[Delivered]] = {}
    for event in events:
        by_person.setdefault(event.person, []).append(event)
    for person, own in by_person.items():
        entries += _person_entries(person, sorted(own, key=lambda e: (e.time, e.delivery_id)))
    return sorted(entries, key=lambda e: (e.person, e.start))


def _person_entries(person: str, events: Sequence[Delivered]) -> list[Entry]:
    entries: list[Entry] = []
    start: datetime | None = None
    break_from: datetime | None = None
    breaks: list[tuple[datetime, datetime]] = []
    ids: list[int] = []
    for event in events:
        at = event.time.replace(microsecond=0)
        if event.action is Action.IN:
            if start is None:
                start, break_from, breaks, ids = at, None, [], [event.delivery_id]
            continue
        if start is None:
            continue
        ids.append(event.delivery_id)
        if event.action is Action.BREAK_START and break_from is None:
            break_from = at
        elif event.action is Action.BREAK_END and break_from is not None:
            breaks.append((break_from, at))
            break_from = None
        elif event.action is Action.OUT:
            if break_from is not None and at > break_from:
                breaks.append((break_from, at))
            entries.append(Entry(person, start, at, tuple(breaks), None, tuple(ids)))
            start = None
    return entries


def break_minutes(breaks: Iterable[tuple[datetime, datetime]]) -> int:
    """Whole minutes, half up, rounded once over the sum (as the TimeTrack sink sends them)."""
    seconds = sum((to - fr).total_seconds() for fr, to in breaks)
    return int((seconds + 30) // 60)


def _differences(ours: Entry, theirs: Entry) -> bool:
    if ours.end != theirs.end:
        return True
    if ours.breaks is not None and theirs.breaks is not None and ours.breaks != theirs.breaks:
        return True
    return (
        ours.break_minutes is not None
        and theirs.break_minutes is not None
        and ours.break_minutes != theirs.break_minutes
    )


def compare_entries(
    bridge: Iterable[Entry], vendor: Iterable[Entry], *, day_of: Callable[[datetime], str]
) -> Comparison:
    """Entries match on (person, start); then the end and the breaks must agree."""
    held: dict[tuple[str, datetime], list[Entry]] = {}
    for entry in vendor:
        held.setdefault((entry.person, entry.start), []).append(entry)
    result = Comparison()
    for ours in sorted(bridge, key=lambda e: (e.person, e.start)):
        day = day_of(ours.start)
        theirs = held.get((ours.person, ours.start), [])
        if not theirs:
            result.findings.append(
                Finding(Kind.MISSING, ours.person, day, ours.describe(), None, ours.delivery_ids)
            )
            continue
        same = next((t for t in theirs if not _differences(ours, t)), None)
        if same is None:
            other = theirs.pop(0)
            result.findings.append(
                Finding(
                    Kind.DIFFERENT,
                    ours.person,
                    day,
                    ours.describe(),
                    other.describe(),
                    ours.delivery_ids,
                )
            )
        else:
            theirs.remove(same)
            result.match(ours.person, day)
    for entries in held.values():
        for entry in entries:
            result.findings.append(
                Finding(Kind.EXTRA, entry.person, day_of(entry.start), None, entry.describe())
            )
    result.findings.sort(key=lambda f: (f.person, f.day, f.kind.value))
    return result
