"""clockin-bridge: badge terminals on MQTT -> durable SQLite queue -> time-and-attendance clouds."""

__version__ = "0.1.0"
