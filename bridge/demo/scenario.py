"""Pure: the demo's cast and its morning at the gate, and what Go2Clock should hold afterwards.

No I/O here. The runner plays the steps in order; each step says what the terminal sends and
what the bridge should make of it, so the expected end state is computed, not hand-counted.
"""

from __future__ import annotations

import enum
import json
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from bridge.events import Action

SITE_TZ = ZoneInfo("Europe/Berlin")
TERMINAL = "gate-1"
TOPIC = f"clockin/{TERMINAL}/events"
CHECKTIME_FORMAT = "%Y-%m-%dT%H:%M:%S"  # Go2Clock's wall-clock format


@dataclass(frozen=True, slots=True)
class Person:
    badge: str
    userid: str
    name: str


ANA = Person("04A1B2C3", "1001", "Ana")
BEN = Person("04B2C3D4", "1002", "Ben")
CHLOE = Person("04C3D4E5", "1003", "Chloé")
DARIO = Person("04D4E5F6", "1004", "Dario")
EMRE = Person("04E5F6A7", "1005", "Emre")
FATOU = Person("04F6A7B8", "1006", "Fatou")  # starts today: not in the directory yet

STAFF = (ANA, BEN, CHLOE, DARIO, EMRE)
EVERYONE = (*STAFF, FATOU)


class Kind(enum.Enum):
    SWIPE = "swipe"  # an ordinary swipe: delivered once
    DOUBLE = "double"  # the same badge and action again seconds later: a duplicate
    RESEND = "resend"  # the terminal sends the previous message again, byte for byte
    UNKNOWN = "unknown"  # a badge the directory lacks: held until the directory knows it
    BAD = "bad"  # not JSON at all: rejected and kept for inspection


class Fault(enum.Enum):
    NONE = "none"
    LOST_ANSWER = "lost_answer"  # Go2Clock stores the punch, but its answer never arrives
    OUTAGE = "outage"  # Go2Clock answers 503 to the next few requests


@dataclass(frozen=True, slots=True)
class Step:
    kind: Kind
    person: Person | None = None
    action: Action | None = None
    at: time | None = None  # site-local wall time this morning
    note: str = ""
    fault: Fault = Fault.NONE  # switched on at the fake Go2Clock before this step is sent


MORNING: tuple[Step, ...] = (
    Step(Kind.SWIPE, ANA, Action.IN, time(7, 52, 4)),
    Step(Kind.SWIPE, BEN, Action.IN, time(7, 55, 31)),
    Step(Kind.SWIPE, CHLOE, Action.IN, time(7, 58, 12)),
    Step(Kind.DOUBLE, CHLOE, Action.IN, time(7, 58, 22), "Chloé swipes again, to be sure"),
    Step(Kind.SWIPE, DARIO, Action.IN, time(8, 1, 47)),
    Step(Kind.RESEND, note="the terminal sends Dario's swipe again (no PUBACK seen, say)"),
    Step(Kind.UNKNOWN, FATOU, Action.IN, time(8, 3, 9), "Fatou's first day: badge unknown"),
    Step(Kind.BAD, note="a misconfigured reader sends form fields instead of JSON"),
    Step(Kind.SWIPE, EMRE, Action.IN, time(8, 5, 40), fault=Fault.LOST_ANSWER),
    Step(Kind.SWIPE, ANA, Action.BREAK_START, time(10, 0, 5), fault=Fault.OUTAGE),
    Step(Kind.SWIPE, BEN, Action.BREAK_START, time(10, 0, 38)),
    Step(Kind.SWIPE, ANA, Action.BREAK_END, time(10, 14, 51)),
    Step(Kind.SWIPE, BEN, Action.BREAK_END, time(10, 15, 20)),
    Step(Kind.SWIPE, CHLOE, Action.BREAK_START, time(10, 30, 2)),
    Step(Kind.SWIPE, CHLOE, Action.BREAK_END, time(10, 44, 47)),
    Step(Kind.SWIPE, DARIO, Action.OUT, time(11, 58, 10), "Dario leaves early"),
)

BAD_PAYLOAD = b"badge=04E5F6A7&action=in"


def swipe_time(step: Step, day: date) -> datetime:
    assert step.at is not None
    return datetime.combine(day, step.at, tzinfo=SITE_TZ)


def payload(step: Step, *, number: int, day: date) -> bytes:
    """The canonical JSON a terminal sends: {"id", "badge", "action", "time"}."""
    assert step.person is not None
    assert step.action is not None
    message = {
        "id": f"g1-{number:06d}",
        "badge": step.person.badge,
        "action": step.action.value,
        "time": swipe_time(step, day).isoformat(),
    }
    return json.dumps(message).encode()


def directory_csv(people: tuple[Person, ...]) -> str:
    return "badge,userid,name\n" + "".join(f"{p.badge},{p.userid},{p.name}\n" for p in people)


@dataclass(frozen=True, slots=True)
class Expected:
    """What the bridge should make of the morning."""

    messages: int  # MQTT messages the terminal publishes
    events: int  # distinct events stored (accepted + double swipes)
    doubles: int
    resends: int
    rejected: int
    punches: Counter[tuple[str, str, str]]  # (userid, checktime, action): each exactly once


def expected(steps: tuple[Step, ...], *, day: date, account_tz: ZoneInfo) -> Expected:
    counts = Counter(step.kind for step in steps)
    punches: Counter[tuple[str, str, str]] = Counter()
    for step in steps:
        if step.kind in (Kind.SWIPE, Kind.UNKNOWN):
            assert step.person is not None
            assert step.action is not None
            checktime = swipe_time(step, day).astimezone(account_tz).strftime(CHECKTIME_FORMAT)
            punches[(step.person.userid, checktime, step.action.value)] += 1
    return Expected(
        messages=len(steps),
        events=counts[Kind.SWIPE] + counts[Kind.UNKNOWN] + counts[Kind.DOUBLE],
        doubles=counts[Kind.DOUBLE],
        resends=counts[Kind.RESEND],
        rejected=counts[Kind.BAD],
        punches=punches,
    )
