"""Pure rules for a swipe without an action, and for the double swipe (duplicate layer 2)."""

from __future__ import annotations

from datetime import datetime

from bridge.events import Action

# A swipe with no button pressed means "the other state" from the person's previous event.
_TOGGLE = {
    Action.IN: Action.OUT,
    Action.OUT: Action.IN,
    Action.BREAK_START: Action.BREAK_END,
    Action.BREAK_END: Action.OUT,
}


def infer_action(
    previous: tuple[Action, datetime] | None, *, at: datetime, window_seconds: float
) -> Action:
    """The action of a swipe without one, from the same person's previous event that local day.

    A swipe inside the double-swipe window repeats the previous action (so it is recognised as a
    duplicate), rather than toggling the person straight back out.
    """
    if previous is None:
        return Action.IN
    action, when = previous
    if abs((at - when).total_seconds()) <= window_seconds:
        return action
    return _TOGGLE[action]
