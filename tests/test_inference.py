"""Table tests for bridge.store.inference.infer_action: the action of a swipe without one."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.events import Action
from bridge.store.inference import (
    DEFAULT_MAX_SHIFT,
    Between,
    InferenceRules,
    ShiftWindow,
    infer_action,
)

AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WINDOW = 60.0


def infer(previous: Action | None, seconds_before: float = 0, window: float = WINDOW) -> Action:
    """The action inferred at AT, the previous event `seconds_before` earlier (None: none)."""
    earlier = None if previous is None else (previous, AT - timedelta(seconds=seconds_before))
    return infer_action(earlier, at=AT, window_seconds=window)


@pytest.mark.parametrize(
    ("previous", "seconds_before", "expected"),
    [
        # the first swipe of the day clocks in
        (None, 0, Action.IN),
        # outside the window: the other state
        (Action.IN, 2 * 3600, Action.OUT),
        (Action.OUT, 3600, Action.IN),
        (Action.BREAK_START, 30 * 60, Action.BREAK_END),
        (Action.BREAK_END, 4 * 3600, Action.OUT),
        # inside the window: the same action again, so that layer 2 sees a double swipe
        (Action.IN, 10, Action.IN),
        (Action.OUT, 59, Action.OUT),
        (Action.BREAK_START, 1, Action.BREAK_START),
        (Action.BREAK_END, 0, Action.BREAK_END),
        # the window's edge is inside, a moment past it is not
        (Action.IN, WINDOW, Action.IN),
        (Action.IN, WINDOW + 0.001, Action.OUT),
        # a previous event stamped after this one (a terminal's clock drifts) counts the same
        (Action.IN, -10, Action.IN),
        (Action.IN, -(WINDOW + 1), Action.OUT),
    ],
)
def test_infer_action(previous: Action | None, seconds_before: float, expected: Action) -> None:
    assert infer(previous, seconds_before) is expected


@pytest.mark.parametrize(
    ("window", "seconds_before", "expected"),
    [
        (0, 0, Action.IN),  # a zero window still treats the very same instant as a repeat
        (0, 1, Action.OUT),
        (300, 299, Action.IN),
        (300, 301, Action.OUT),
    ],
)
def test_the_window_is_the_callers(window: float, seconds_before: float, expected: Action) -> None:
    assert infer(Action.IN, seconds_before, window=window) is expected


def test_no_previous_event_is_in_whatever_the_window() -> None:
    assert infer_action(None, at=AT, window_seconds=0) is Action.IN
    assert infer_action(None, at=AT, window_seconds=86400) is Action.IN


def test_a_day_of_bare_swipes() -> None:
    """Bare swipes through a day alternate in and out."""
    previous: tuple[Action, datetime] | None = None
    actions = []
    for hour in (8, 12, 13, 17):
        at = AT.replace(hour=hour)
        action = infer_action(previous, at=at, window_seconds=WINDOW)
        actions.append(action)
        previous = (action, at)
    assert actions == [Action.IN, Action.OUT, Action.IN, Action.OUT]


@given(
    previous=st.sampled_from(list(Action)),
    seconds=st.floats(min_value=-7 * 86400, max_value=7 * 86400, allow_nan=False),
    window=st.floats(min_value=0, max_value=3600, allow_nan=False),
)
def test_repeat_inside_the_window_toggle_outside(
    previous: Action, seconds: float, window: float
) -> None:
    inferred = infer(previous, seconds, window=window)
    gap = abs((AT - (AT - timedelta(seconds=seconds))).total_seconds())
    if gap <= window:
        assert inferred is previous
    elif timedelta(seconds=seconds) >= DEFAULT_MAX_SHIFT:
        assert inferred is Action.IN  # the previous shift is over
    else:
        assert inferred is not previous
        assert isinstance(inferred, Action)


# --- by shift, not by calendar day --------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")


def local(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=BERLIN).astimezone(UTC)


def run(rules: InferenceRules, times: list[datetime], terminal: str = "door") -> list[str]:
    """Bare swipes in order, each decided from the latest earlier one within its lookback,
    as the store does."""
    history: list[tuple[Action, datetime]] = []
    actions = []
    for at in times:
        since = rules.lookback(at, terminal)
        candidates = [(a, when) for a, when in history if since <= when <= at]
        previous = max(candidates, key=lambda item: item[1]) if candidates else None
        action = rules.infer(previous, at=at, terminal=terminal)
        history.append((action, at))
        actions.append(action.value)
    return actions


@pytest.mark.parametrize(
    ("hours_before", "expected"),
    [
        (15.99, Action.OUT),  # less than max_shift_hours earlier: the same shift
        (16, Action.IN),  # max_shift_hours or more: that shift is over
        (40, Action.IN),
    ],
)
def test_the_previous_shift_ends_after_max_shift(hours_before: float, expected: Action) -> None:
    assert infer(Action.IN, hours_before * 3600) is expected


def test_max_shift_is_the_callers() -> None:
    earlier = (Action.IN, AT - timedelta(hours=10))
    assert infer_action(earlier, at=AT, window_seconds=60, max_shift=timedelta(hours=12)) is (
        Action.OUT
    )
    assert infer_action(earlier, at=AT, window_seconds=60, max_shift=timedelta(hours=8)) is (
        Action.IN
    )


def test_two_night_shifts_then_a_day_shift() -> None:
    """Payroll's answer: in/out per shift, whatever the calendar day (it was in, in, out, in)."""
    rules = InferenceRules(tz=BERLIN)
    times = [local(23, 22), local(24, 6), local(24, 22), local(25, 6)]
    times += [local(26, 8), local(26, 12), local(26, 12, 30), local(26, 17)]
    assert run(rules, times) == ["in", "out", "in", "out", "in", "out", "in", "out"]


def test_a_missed_out_starts_the_next_day_with_in() -> None:
    rules = InferenceRules(tz=BERLIN)
    assert run(rules, [local(23, 8), local(24, 8), local(24, 17)]) == ["in", "in", "out"]


def test_a_night_shift_across_the_october_change() -> None:
    """22:00 CEST to 06:00 CET is 9 hours: still one shift."""
    rules = InferenceRules(tz=BERLIN, max_shift=timedelta(hours=9, minutes=30))
    times = [local(24, 22, month=10), local(25, 6, month=10)]
    assert times[1] - times[0] == timedelta(hours=9)
    assert run(rules, times) == ["in", "out"]


def test_breaks_inside_the_shift_work_as_before() -> None:
    rules = InferenceRules(tz=BERLIN)
    at = local(23, 12)
    assert rules.infer((Action.BREAK_START, local(23, 11, 30)), at=at, terminal="t") is (
        Action.BREAK_END
    )
    assert rules.infer((Action.BREAK_END, local(23, 11, 30)), at=at, terminal="t") is Action.OUT
    assert rules.infer((Action.BREAK_START, local(22, 12)), at=at, terminal="t") is Action.IN


NIGHT = ShiftWindow(
    name="night",
    start=time(22, 0),
    end=time(6, 0),
    margin_before=timedelta(minutes=60),
    margin_after=timedelta(minutes=120),
)


def test_a_scheduled_night_window_crossing_midnight() -> None:
    """First swipe in, then breaks, then out in the closing part (from 05:00)."""
    rules = InferenceRules(tz=BERLIN, shifts=(NIGHT,))
    times = [local(23, 21, 45), local(24, 1), local(24, 1, 30), local(24, 5, 10)]
    assert run(rules, times) == ["in", "break_start", "break_end", "out"]


def test_a_scheduled_window_ignores_the_previous_occurrence() -> None:
    """The night before ended without an out: tonight's first swipe is still in."""
    rules = InferenceRules(tz=BERLIN, shifts=(NIGHT,), max_shift=timedelta(hours=30))
    assert run(rules, [local(23, 22), local(24, 22), local(25, 6)]) == ["in", "in", "out"]


def test_a_scheduled_window_across_the_october_change() -> None:
    rules = InferenceRules(tz=BERLIN, shifts=(NIGHT,))
    times = [local(24, 22, month=10), local(25, 2, month=10), local(25, 2, 30, month=10)]
    times.append(local(25, 6, month=10))
    assert run(rules, times) == ["in", "break_start", "break_end", "out"]


def test_between_toggle_and_terminals() -> None:
    toggle = ShiftWindow(
        name="day",
        start=time(8, 0),
        end=time(17, 0),
        margin_before=timedelta(minutes=30),
        margin_after=timedelta(minutes=30),
        terminals=frozenset({"hall"}),
        between=Between.TOGGLE,
    )
    rules = InferenceRules(tz=BERLIN, shifts=(toggle,))
    times = [local(23, 7, 45), local(23, 12), local(23, 12, 30), local(23, 16, 40)]
    assert run(rules, times, terminal="hall") == ["in", "out", "in", "out"]
    # a terminal the window does not name: the default rule (here the same answer)
    assert rules.window_for(local(23, 12), "gate") is None
    # outside the window (after 17:30): the default rule
    assert rules.window_for(local(23, 17, 31), "hall") is None


def test_a_double_swipe_inside_a_window_repeats() -> None:
    rules = InferenceRules(tz=BERLIN, shifts=(NIGHT,))
    assert run(rules, [local(23, 22), local(23, 22, 0) + timedelta(seconds=30)]) == ["in", "in"]


def test_a_window_for_a_directory_group() -> None:
    """A window with `groups` applies to people whose directory column holds one of them."""
    night_only = dataclasses.replace(NIGHT, groups=frozenset({"night"}))
    rules = InferenceRules(tz=BERLIN, shifts=(night_only,))
    at = local(24, 1)
    assert rules.window_for(at, "hall", "night") is not None
    assert rules.window_for(at, "hall", "day") is None
    assert rules.window_for(at, "hall", None) is None  # no directory entry, or no column value
    previous = (Action.IN, local(23, 22))
    assert rules.infer(previous, at=at, terminal="hall", group="night") is Action.BREAK_START
    assert rules.infer(previous, at=at, terminal="hall", group="day") is Action.OUT
