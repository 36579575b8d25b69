"""The sink's health state machine, pure: a flaky vendor (a few answered 5xx) keeps the sink
sending; a vendor that cannot be reached, or fails most of its recent answers, starts an outage
(one probe at a time), logged once when it starts and once when it ends. No I/O here: the
dispatcher around it is tested in test_flaky_vendor.py."""

from __future__ import annotations

from collections import Counter

import pytest
from structlog.testing import capture_logs

from bridge.config import RetryConfig
from bridge.delivery import Result
from bridge.dispatch.evidence import FailureWindow
from bridge.dispatch.health import SinkHealth
from bridge.ops.metrics import Metrics

CAPACITY = 36  # concurrency 4 + the claim-ahead

ANSWERED_5XX = Result.retry("HTTP 500")
REFUSED = Result.retry("ClientConnectorError: Connect call failed", unreachable=True)
DELIVERED = Result.delivered()


def health(**retry: float) -> SinkHealth:
    config = RetryConfig(**{"initial_seconds": 30.0, "max_seconds": 300.0, **retry})
    return SinkHealth(sink="go2clock", retry=config, summary_seconds=60.0, metrics=Metrics())


def outage_lines(logs: list[dict[str, object]]) -> Counter[object]:
    return Counter(entry["event"] for entry in logs if str(entry["event"]).startswith("sink."))


# --- the window ----------------------------------------------------------------------------


def test_the_window_counts_failures_among_the_last_answers_only():
    window = FailureWindow(size=20, ratio=0.5)
    window.add(failed=True)
    assert not window.tripped, "one failure out of one answer is not 100 % failing"
    for _ in range(8):
        window.add(failed=True)
    assert (window.failures, window.tripped) == (9, False)
    window.add(failed=True)
    assert (window.failures, window.tripped) == (10, True)
    for _ in range(11):
        window.add(failed=False)  # the first failures slide out of the last 20
    assert (window.failures, window.tripped) == (9, False)
    window.clear()
    assert window.failures == 0


def test_a_window_of_one_at_ratio_one_trips_on_every_failure():
    window = FailureWindow(size=1, ratio=1.0)
    window.add(failed=True)
    assert window.tripped
    window.add(failed=False)
    assert not window.tripped


# --- SinkHealth ----------------------------------------------------------------------------


def test_one_answer_in_ten_failing_never_stops_the_sink():
    sink = health()
    with capture_logs() as logs:
        for n in range(1000):
            sink.record(ANSWERED_5XX if n % 10 == 9 else DELIVERED)
            assert not sink.failing
            assert sink.claim_limit(capacity=CAPACITY, in_flight=4) == CAPACITY - 4
            assert sink.may_send(probe=False)
    assert outage_lines(logs) == Counter()
    assert sink.state()["state"] == "sending"


def test_answered_failures_start_an_outage_at_the_threshold_not_before():
    sink = health(outage_window=20, outage_failure_ratio=0.5)
    with capture_logs() as logs:
        for _ in range(9):
            sink.record(ANSWERED_5XX)
        assert not sink.failing
        sink.record(ANSWERED_5XX)
        assert sink.failing
    assert outage_lines(logs) == Counter({"sink.outage_started": 1})
    [started] = [entry for entry in logs if entry["event"] == "sink.outage_started"]
    assert started["failed_of_last"] == "10/20"
    assert sink.state()["state"] == "retrying"
    assert sink.state()["last_error"] == "HTTP 500"


def test_a_refused_connection_starts_an_outage_at_once():
    sink = health()
    with capture_logs() as logs:
        sink.record(REFUSED)
    assert sink.failing
    assert outage_lines(logs) == Counter({"sink.outage_started": 1})
    # the probe gate backs off like a retry: half to all of initial_seconds
    wait = sink.seconds_until_claims()
    assert wait is not None
    assert 14 < wait <= 30
    assert sink.claim_limit(capacity=CAPACITY, in_flight=0) == 0
    assert not sink.may_send(probe=False), "work claimed before the outage is handed back"


def test_in_an_outage_one_probe_at_a_time():
    sink = health()
    sink.record(REFUSED)
    sink.probe_now()  # the gate opens (as it does after its back-off)
    assert sink.claim_limit(capacity=CAPACITY, in_flight=0) == 1
    assert sink.claim_limit(capacity=CAPACITY, in_flight=1) == 0
    assert sink.may_send(probe=True)
    assert not sink.may_send(probe=False)
    sink.record(ANSWERED_5XX)  # the probe failed too: the gate closes again, longer
    assert sink.claim_limit(capacity=CAPACITY, in_flight=0) == 0
    wait = sink.seconds_until_claims()
    assert wait is not None
    assert 29 < wait <= 60


def test_every_failure_of_an_outage_logs_nothing_more_and_an_answer_ends_it_once():
    sink = health()
    with capture_logs() as logs:
        sink.record(REFUSED)
        for _ in range(50):
            sink.record(REFUSED)
            sink.record(ANSWERED_5XX)
        sink.record(DELIVERED)
        sink.record(DELIVERED)
    assert outage_lines(logs) == Counter({"sink.outage_started": 1, "sink.outage_ended": 1})
    [ended] = [entry for entry in logs if entry["event"] == "sink.outage_ended"]
    assert ended["failed_attempts"] == 101
    assert not sink.failing
    assert sink.seconds_until_claims() is None
    assert sink.claim_limit(capacity=CAPACITY, in_flight=0) == CAPACITY
    assert sink.state() == {"state": "sending", "since": None, "last_error": None}


def test_after_recovery_the_outages_failures_are_not_held_against_the_sink():
    sink = health()
    for _ in range(20):
        sink.record(ANSWERED_5XX)
    assert sink.failing
    sink.record(DELIVERED)
    with capture_logs() as logs:
        sink.record(ANSWERED_5XX)
    assert not sink.failing, "one failure after recovery restarted the outage"
    assert outage_lines(logs) == Counter()


def test_a_second_outage_is_logged_again():
    sink = health()
    with capture_logs() as logs:
        for _ in range(2):
            sink.record(REFUSED)
            sink.record(DELIVERED)
    assert outage_lines(logs) == Counter({"sink.outage_started": 2, "sink.outage_ended": 2})


def test_a_429_with_retry_after_holds_the_whole_sink_without_an_outage():
    sink = health()
    with capture_logs() as logs:
        sink.record(Result.retry("HTTP 429 Too Many Requests", 20.0))
        # another request in flight when the 429 came succeeds: the vendor's wish still holds
        sink.record(DELIVERED)
    assert outage_lines(logs) == Counter()
    assert not sink.failing
    assert sink.claim_limit(capacity=CAPACITY, in_flight=0) == 0
    assert not sink.may_send(probe=False)
    wait = sink.seconds_until_claims()
    assert wait is not None
    assert 19 < wait <= 20


def test_a_retry_after_is_capped_at_max_seconds():
    sink = health(max_seconds=60.0)
    sink.record(Result.retry("HTTP 429 Too Many Requests", 86_400.0))
    wait = sink.seconds_until_claims()
    assert wait is not None
    assert 59 < wait <= 60


@pytest.mark.parametrize("result", [ANSWERED_5XX, REFUSED])
def test_window_one_at_ratio_one_is_the_old_rule_every_failure_is_an_outage(result: Result):
    sink = health(outage_window=1, outage_failure_ratio=1.0)
    sink.record(result)
    assert sink.failing
