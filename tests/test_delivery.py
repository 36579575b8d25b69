"""The one mapping from a sink's answer to what becomes of the delivery (pure)."""

from __future__ import annotations

import pytest

from bridge.delivery import DeliveryState, Outcome, Result, Settlement, settlement_of

NOW, LATER = 1000.0, 1060.0


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (Result.delivered("ok"), Settlement(DeliveryState.DELIVERED)),
        (Result.duplicate("already there"), Settlement(DeliveryState.DELIVERED)),
        (Result.dead("Validation Error"), Settlement(DeliveryState.DEAD, error="Validation Error")),
        (Result.held("no open shift"), Settlement(DeliveryState.HELD, error="no open shift")),
        (
            Result.retry("HTTP 503"),
            Settlement(DeliveryState.PENDING, retry_at=LATER, error="HTTP 503"),
        ),
        # Credentials refused: not the event's fault, the attempt is given back, first in line.
        (
            Result.paused("Invalid API key"),
            Settlement(
                DeliveryState.PENDING, retry_at=NOW, attempt_counts=False, error="Invalid API key"
            ),
        ),
    ],
)
def test_every_outcome_settles_one_way(result: Result, expected: Settlement) -> None:
    assert settlement_of(result, retry_at=LATER, now=NOW) == expected


def test_every_outcome_is_mapped() -> None:
    for outcome in Outcome:
        assert settlement_of(Result(outcome), retry_at=LATER, now=NOW).state in DeliveryState


def test_a_long_error_is_kept_cut_short() -> None:
    settled = settlement_of(Result.dead("x" * 2000), retry_at=LATER, now=NOW)
    assert settled.error == "x" * 500
