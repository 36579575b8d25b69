"""Prometheus metrics, one registry per running bridge (so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from bridge import __version__

QUEUE_STATES = ("unmapped", "pending", "inflight", "held", "delivered", "dead", "dropped")


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.events = Counter(
            "clockin_events_total",
            "MQTT messages by what became of them (stored, unmapped, duplicate, redelivered,"
            " rejected)",
            ["terminal", "format", "status"],
            registry=registry,
        )
        self.deliveries = Counter(
            "clockin_deliveries_total",
            "Delivery attempts by sink and outcome",
            ["sink", "outcome"],
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
        Info("clockin_build", "Version of the running bridge", registry=registry).info(
            {"version": __version__}
        )

    def set_queue(self, status: dict[str, object]) -> None:
        """Refresh the queue gauges from Store.status() (read when /metrics is scraped)."""
        sinks = status.get("sinks", {})
        assert isinstance(sinks, dict)
        for sink, entry in sinks.items():
            for state in QUEUE_STATES:
                self.queue_depth.labels(sink, state).set(entry["states"].get(state, 0))
            self.oldest_pending.labels(sink).set(entry["oldest_pending_seconds"] or 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
