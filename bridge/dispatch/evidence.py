"""Is a vendor down, or only flaky? What a sink's recent answers say. Pure: no I/O, no clock.

A load balancer in front of a working vendor answers a few percent 5xx; such a failure is that
one person's delivery to retry later, not a reason to stop sending everyone else's. The vendor
is taken as down when it cannot be reached at all (connection refused, no answer in time: see
`Result.unreachable`), or when at least `ratio` of its last `size` answers were failures.
"""

from __future__ import annotations

from collections import deque


class FailureWindow:
    """The last `size` answers of a sink, failed or not. Before `size` answers are in, the
    missing ones count as successes: a first failure is not "100 % failing"."""

    def __init__(self, *, size: int, ratio: float) -> None:
        self._answers: deque[bool] = deque(maxlen=size)
        self._failures = 0
        self._threshold = ratio * size

    @property
    def failures(self) -> int:
        """Failed answers among the last `size`."""
        return self._failures

    @property
    def tripped(self) -> bool:
        """At least `ratio` of the last `size` answers failed: the vendor is down."""
        return self._failures >= self._threshold

    def add(self, *, failed: bool) -> None:
        if len(self._answers) == self._answers.maxlen and self._answers[0]:
            self._failures -= 1  # the oldest answer, a failure, leaves the window
        self._answers.append(failed)
        self._failures += failed

    def clear(self) -> None:
        self._answers.clear()
        self._failures = 0
