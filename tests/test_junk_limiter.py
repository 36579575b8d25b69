"""The junk limiter: rejected messages kept per terminal and in all, one flood warning a minute."""

from __future__ import annotations

import structlog

from bridge.ingest.junk import JunkLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_over_its_rate_is_only_counted_and_warned_about_once_a_minute() -> None:
    clock = Clock()
    limiter = JunkLimiter(per_terminal=5, total=1000, clock=clock)
    with structlog.testing.capture_logs() as logs:
        kept = [limiter.keep("gate1") for _ in range(50)]
        assert limiter.keep("gate2"), "another terminal keeps its own budget"
        clock.now += 30
        more = [limiter.keep("gate1") for _ in range(10)]  # half a minute: 2.5 refilled
    assert kept.count(True) == 5
    assert more.count(True) == 2
    assert limiter.not_kept == 45 + 8
    floods = [entry for entry in logs if entry["event"] == "terminal.flooding"]
    assert len(floods) == 1
    assert floods[0]["terminal"] == "gate1"
    clock.now += 60
    with structlog.testing.capture_logs() as logs:
        for _ in range(10):
            limiter.keep("gate1")
    (flood,) = [entry for entry in logs if entry["event"] == "terminal.flooding"]
    assert flood["not_kept"] >= 8  # the ones since the last warning, in one line


def test_made_up_terminal_ids_share_one_budget_and_one_warning() -> None:
    """Random topic levels make every message a new terminal: the shared budget holds."""
    clock = Clock()
    limiter = JunkLimiter(per_terminal=60, total=100, max_tracked=50, clock=clock)
    with structlog.testing.capture_logs() as logs:
        kept = sum(limiter.keep(f"t{n}") for n in range(10_000))
    assert kept == 100
    assert [entry["terminal"] for entry in logs if entry["event"] == "terminal.flooding"] == ["*"]
    assert len(limiter._buckets) == 50  # remembered terminals stay bounded


def test_an_overflowed_terminal_is_counted_once_per_look_that_counts() -> None:
    """Ingest looks at a message's label twice (clock skew, then the count): one overflow."""
    from prometheus_client import CollectorRegistry, Counter

    from bridge.ops.metrics import OTHER_TERMINALS, TerminalLabels

    overflowed = Counter("overflowed", "test", registry=CollectorRegistry())
    labels = TerminalLabels(limit=1, overflowed=overflowed)
    assert labels("gate1") == "gate1"
    assert labels("gate2", count=False) == OTHER_TERMINALS
    assert overflowed._value.get() == 0
    assert labels("gate2") == OTHER_TERMINALS
    assert overflowed._value.get() == 1
