"""McTime, the pure part: request bodies, the per-person clock state, reading the answers.

No I/O here; sink.py does the HTTP, api.py reads the answers. `break` toggles on the server, so
the bridge keeps each person's clock (off / running / on_break) as the sink state and drops
actions that would not change it before anything is sent.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from bridge.config import McTimeConfig
from bridge.delivery import Job, Result
from bridge.events import Action
from bridge.vendors.common import short

PAGE_SIZE = 20  # GET /clock answers 20 running clocks per page


class Clock(enum.StrEnum):
    OFF = "off"
    RUNNING = "running"
    ON_BREAK = "on_break"


MCTIME_ACTION = {
    Action.IN: "start",
    Action.OUT: "stop",
    Action.BREAK_START: "break",
    Action.BREAK_END: "break",
}
TARGET = {
    Action.IN: Clock.RUNNING,
    Action.OUT: Clock.OFF,
    Action.BREAK_START: Clock.ON_BREAK,
    Action.BREAK_END: Clock.RUNNING,
}


# -- the request body --------------------------------------------------------------------------


def mctime_datetime(job: Job, site_tz: ZoneInfo) -> str:
    """ISO-8601 with the site's offset at that instant, e.g. 2024-07-01T08:00:00+02:00."""
    if job.time.tzinfo is None:
        # astimezone() would silently take a naive time as the host's local time
        msg = f"job {job.delivery_id} has a naive time"
        raise ValueError(msg)
    return job.time.astimezone(site_tz).isoformat(timespec="seconds")


def build_clock_body(job: Job, *, site_tz: ZoneInfo, config: McTimeConfig) -> dict[str, Any]:
    """The POST /clock body. timeType and organization belong to the clock, so only `start`
    carries them (the docs' break and stop examples have neither); comment goes with any."""
    action = MCTIME_ACTION[job.action]
    body: dict[str, Any] = {
        "action": action,
        "dateTime": mctime_datetime(job, site_tz),
        "userId": job.person,
    }
    if action == "start":
        body["timeType"] = config.time_type
        body.update(organization_fields(config))
    if job.note:
        body["comment"] = job.note
    return body


def organization_fields(config: McTimeConfig) -> dict[str, Any]:
    """The id when known (the docs: unique, preferred; a name is ignored next to it)."""
    if config.organization_id:
        key, value = "id", config.organization_id
    elif config.organization_name:
        key, value = "name", config.organization_name
    else:
        return {}
    if config.organization_form == "nested":
        return {"organization": {key: value}}
    return {f"organization{key.capitalize()}": value}


# -- the person's clock as saved sink state ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Saved:
    """The state saved for a person: the clock (None: unknown) and an unverified send."""

    clock: Clock | None
    unverified: Action | None = None
    delivery: int | None = None  # the delivery whose answer was lost


def read_state(state: Mapping[str, Any]) -> Saved:
    """The saved state; anything unreadable counts as unknown (and is verified first)."""
    try:
        clock = Clock(state["clock"]) if state.get("clock") else None
    except ValueError:
        clock = None
    try:
        unverified = Action(state["unverified"]) if state.get("unverified") else None
    except ValueError:
        return Saved(None, Action.IN, None)  # unreadable marker: verify before anything
    delivery = state.get("delivery")
    return Saved(clock, unverified, delivery if isinstance(delivery, int) else None)


def clock_state(clock: Clock) -> dict[str, Any]:
    return {"clock": clock.value}


def unverified_state(clock: Clock | None, job: Job) -> dict[str, Any]:
    state: dict[str, Any] = {"unverified": job.action.value, "delivery": job.delivery_id}
    if clock is not None:
        state["clock"] = clock.value
    return state


class Step(enum.Enum):
    SEND = "send"
    DUPLICATE = "duplicate"
    VERIFY = "verify"  # read GET /clock first: the bridge's state cannot decide it
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Plan:
    step: Step
    reason: str = ""


_NO_CLOCK = "McTime shows no running clock"


def plan(clock: Clock | None, action: Action, *, verified: bool = False) -> Plan:
    """What to do with `action` when the person's clock is `clock` (None: unknown).

    `verified`: `clock` was just read from the server, so no further check is possible.
    """
    if action is Action.IN:
        if clock is Clock.RUNNING:
            return Plan(Step.DUPLICATE, "in while already clocked in")
        if clock is Clock.ON_BREAK:
            return Plan(Step.DUPLICATE, "in while on break")
        return Plan(Step.SEND)  # a refused start is reconciled from GET /clock
    if action is Action.OUT:
        if clock is Clock.OFF:
            return Plan(Step.DUPLICATE, "out while not clocked in")
        return Plan(Step.SEND)
    return _plan_break(clock, action, verified=verified)


def _plan_break(clock: Clock | None, action: Action, *, verified: bool) -> Plan:
    """`break` toggles: never sent unless the clock is known to be in the right state."""
    want = Clock.RUNNING if action is Action.BREAK_START else Clock.ON_BREAK
    if clock is want:
        return Plan(Step.SEND)
    if action is Action.BREAK_START and clock is Clock.ON_BREAK:
        return Plan(Step.DUPLICATE, "break_start while already on break")
    if action is Action.BREAK_END and clock is Clock.RUNNING:
        return Plan(Step.DUPLICATE, "break_end while not on break")
    if action is Action.BREAK_END and clock is Clock.OFF:
        return Plan(Step.DUPLICATE, "break_end while not clocked in (not on break)")
    if not verified:
        return Plan(Step.VERIFY)  # unknown, or break_start while the bridge saw no clock
    return Plan(Step.DEAD, f"{action.value} while not clocked in: {_NO_CLOCK}")


def reconcile_refusal(action: Action, server: Clock, refusal: str) -> Result:
    """McTime refused the action (400/404); `server` is the clock GET /clock shows now.

    The effect already there -> duplicate; otherwise dead with the reason. Either way the
    saved state becomes what the server shows. A `stop` refused with no clock is dead: nothing
    shows the bridge's `out` ever reached McTime.
    """
    state = clock_state(server)
    if server is TARGET[action] and action is not Action.OUT:
        return Result.duplicate(
            short(f"McTime already shows {server.value} ({action.value} refused: {refusal})"),
            state=state,
        )
    if server is Clock.OFF and action is not Action.IN:
        return Result.dead(short(f"{action.value} refused: {_NO_CLOCK} ({refusal})"), state=state)
    return Result.dead(
        short(f"McTime refused {action.value} ({refusal}); its clock is {server.value}"),
        state=state,
    )


# -- GET /clock --------------------------------------------------------------------------------


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1", "yes"))


def clock_of_item(data: Mapping[str, Any]) -> Clock:
    """A running clock item: on a break when `onBreak` says so or its last break is open."""
    for key in ("onBreak", "on_break", "isOnBreak"):
        if key in data:
            return Clock.ON_BREAK if _truthy(data[key]) else Clock.RUNNING
    breaks = data.get("breaks")
    if isinstance(breaks, list) and breaks:
        last = breaks[-1]
        if isinstance(last, Mapping) and not last.get("to"):
            return Clock.ON_BREAK
    return Clock.RUNNING


class ClockReplyError(ValueError):
    """A GET /clock page the bridge cannot read: never taken as "no running clock"."""


USER_FIELDS = ("userId", "user_id", "user")  # `user` may be {"id": ...}; so may `userId`


def clock_user(data: Mapping[str, Any]) -> str | None:
    """The user a running clock belongs to, in any spelling seen; None when none names one."""
    for key in USER_FIELDS:
        user = data.get(key)
        if isinstance(user, Mapping):
            user = user.get("id")
        if isinstance(user, bool) or not isinstance(user, (str, int)) or user == "":
            continue
        return str(user)
    return None


def running_clocks(answer: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], int]:
    """The running clocks on one GET /clock page and how many items the page had.

    The reply's shape is undocumented, so both plausible ones are read: one item per running
    clock (`{"items": [{"message", "data": {clock}}, ...]}`) and one item whose `data` is the
    list of them (`{"items": [{"message", "data": [{clock}, ...]}]}`). Anything else (an item
    without data, data of another type, a clock naming no user) raises ClockReplyError.
    """
    items = answer.get("items")
    if items is None:
        items = []
    if not isinstance(items, list):
        msg = "`items` is not a list"
        raise ClockReplyError(msg)
    clocks: list[Mapping[str, Any]] = []
    for item in items:
        data = item.get("data") if isinstance(item, Mapping) else None
        listed = data if isinstance(data, list) else [data]
        for clock in listed:
            if not isinstance(clock, Mapping):
                msg = f"an item's data is {type(clock).__name__}, not a running clock"
                raise ClockReplyError(msg)
            if clock_user(clock) is None:
                msg = "a running clock names no user (userId, user_id, user.id)"
                raise ClockReplyError(msg)
            clocks.append(clock)
    return clocks, len(items)


def find_clock(answer: Mapping[str, Any], person: str) -> tuple[Clock | None, int, list[str]]:
    """(the person's clock on this page or None, how full the page is, the page's user ids).

    Raises ClockReplyError for a page it cannot read (see running_clocks)."""
    clocks, items = running_clocks(answer)
    users = [str(clock_user(clock)) for clock in clocks]
    found = next(
        (clock_of_item(c) for c, u in zip(clocks, users, strict=True) if u == person), None
    )
    return found, max(items, len(clocks)), users
