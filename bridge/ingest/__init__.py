"""MQTT ingest: the only package that imports aiomqtt and paho (their internals: mqtt.py).

Messages are stored first and acknowledged after: the PUBACK for a QoS 1 message goes out only
once the SQLite transaction holding it has committed, in arrival order.
"""

from bridge.ingest.client import new_client
from bridge.ingest.consumer import Ingest
from bridge.ingest.mqtt import acknowledge

__all__ = ["Ingest", "acknowledge", "new_client"]
