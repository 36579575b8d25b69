"""Prometheus metrics, one registry per running bridge (so tests can run several)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from bridge import __version__
from bridge.delivery import DeliveryState
from bridge.store.records import QueueStatus

if TYPE_CHECKING:
    from bridge.store.integrity import IntegrityWatch

QUEUE_STATES = tuple(DeliveryState)
# Terminal ids come from the terminals: only this many get a label of their own (the first
# seen), the rest are counted as OTHER_TERMINALS, so a flood of made-up ids cannot grow
# /metrics or the process without bound.
MAX_TERMINAL_LABELS = 200
OTHER_TERMINALS = "other"


class TerminalLabels:
    """The label a terminal id is counted under: itself for the first `limit` seen, else
    OTHER_TERMINALS (and one more overflowed id counted)."""

    def __init__(self, *, limit: int, overflowed: Counter) -> None:
        self._limit = limit
        self._known: set[str] = set()
        self._overflowed = overflowed

    def __call__(self, terminal: str, *, count: bool = True) -> str:
        """`count=False` for a second look at the same message (it is counted once)."""
        if terminal in self._known:
            return terminal
        if len(self._known) < self._limit and terminal != OTHER_TERMINALS:
            self._known.add(terminal)
            return terminal
        if count:
            self._overflowed.inc()
        return OTHER_TERMINALS


class Metrics:
    def __init__(self, *, max_terminal_labels: int = MAX_TERMINAL_LABELS) -> None:
        self.registry = registry = CollectorRegistry()
        self.terminal_overflow = Counter(
            "clockin_terminal_label_overflow_total",
            f"Messages counted under terminal={OTHER_TERMINALS!r} because"
            " the terminal ids with a label of their own were all taken",
            registry=registry,
        )
        # Every terminal label below goes through this, so the series stay bounded.
        self.terminal_label = TerminalLabels(
            limit=max_terminal_labels, overflowed=self.terminal_overflow
        )
        self.rejected_not_kept = Counter(
            "clockin_rejected_not_kept_total",
            "Rejected messages (and events with an implausible time) counted but not stored:"
            " their terminal (or all together) sent more junk than the per-minute limits keep",
            registry=registry,
        )
        self.held_for_time = Counter(
            "clockin_events_held_for_time_total",
            "Events stored with an implausible device time, held for an operator (held"
            " complete --use-received-time); why: too_early or too_far_ahead",
            ["why"],
            registry=registry,
        )
        self.events = Counter(
            "clockin_events_total",
            "MQTT messages by what became of them (accepted, unmapped, duplicate, redelivered,"
            " rejected, held for an implausible time, not_kept)",
            ["terminal", "format", "status"],
            registry=registry,
        )
        self.deliveries = Counter(
            "clockin_deliveries_total",
            "Delivery attempts by sink and outcome",
            ["sink", "outcome"],
            registry=registry,
        )
        self.held = Counter(
            "clockin_held_total",
            "Deliveries held for an operator by sink and why: late (older than the person's last"
            " action applied at a sink that keeps state), direction (a late swipe would change"
            " a direction already inferred), vendor (the sink could not decide)",
            ["sink", "reason"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "clockin_queue_depth",
            "Deliveries by sink and state",
            ["sink", "state"],
            registry=registry,
        )
        self.oldest_pending = Gauge(
            "clockin_oldest_pending_seconds",
            "Age of the oldest undelivered delivery per sink",
            ["sink"],
            registry=registry,
        )
        self.latency = Histogram(
            "clockin_delivery_latency_seconds",
            "From the event stored to the vendor accepting it",
            ["sink"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
            registry=registry,
        )
        self.mqtt_connected = Gauge(
            "clockin_mqtt_connected", "1 while the broker connection is up", registry=registry
        )
        self.sink_paused = Gauge(
            "clockin_sink_paused",
            "1 while a sink is paused (credentials refused)",
            ["sink"],
            registry=registry,
        )
        self.clock_skew = Counter(
            "clockin_terminal_clock_skew_events_total",
            "Events whose time was further from the gateway's clock than allowed",
            ["terminal"],
            registry=registry,
        )
        self.database_damaged = Gauge(
            "clockin_database_damaged",
            "1 once the whole-file integrity check found the database damaged (every write is"
            " then refused and the file left untouched)",
            registry=registry,
        )
        self.database_check_passed = Gauge(
            "clockin_database_check_passed_timestamp_seconds",
            "Unix time the whole-file integrity check last passed (0: none recorded yet)",
            registry=registry,
        )
        Info("clockin_build", "Version of the running bridge", registry=registry).info(
            {"version": __version__}
        )

    def set_queue(self, status: QueueStatus) -> None:
        """Refresh the queue gauges from Store.status() (read when /metrics is scraped)."""
        for sink, entry in status["sinks"].items():
            for state in QUEUE_STATES:
                self.queue_depth.labels(sink, state).set(entry["states"].get(state, 0))
            self.oldest_pending.labels(sink).set(entry["oldest_pending_seconds"] or 0)

    def watch_database(self, watch: IntegrityWatch | None) -> None:
        """Read the integrity check's state at each scrape (a command's store has none)."""
        if watch is None:
            return
        self.database_damaged.set_function(lambda: float(watch.damage is not None))
        self.database_check_passed.set_function(lambda: watch.checked_at or 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
