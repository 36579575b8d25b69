"""Table tests for bridge.store.inference.infer_action: the action of a swipe without one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.events import Action
from bridge.store.inference import infer_action

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
    else:
        assert inferred is not previous
        assert isinstance(inferred, Action)
