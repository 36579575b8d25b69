"""The durable queue: the only package that touches SQLite (through aiosqlite).

One class, split by role: connection (open, migrate, transactions), intake (events in, with
duplicate detection), queue (claim and settle deliveries), inspect (status views).
"""

from bridge.store.admin import AdminMixin
from bridge.store.connection import StoreRole
from bridge.store.contract import DaemonStore
from bridge.store.inspect import InspectMixin
from bridge.store.intake import IntakeMixin
from bridge.store.lock import StoreInUseError
from bridge.store.people import PeopleMixin
from bridge.store.queue import QueueMixin
from bridge.store.reconcile import ReconcileMixin
from bridge.store.records import (
    GroupResolver,
    Incoming,
    PersonResolver,
    QueueStatus,
    Rejection,
    SinkQueue,
    Stored,
    StoreError,
    StoreWriteError,
    parse_utc_text,
    utc_text,
)
from bridge.store.retention import RetentionMixin, RetentionPolicy
from bridge.store.time_repair import TimeRepairMixin


class Store(
    IntakeMixin,
    QueueMixin,
    InspectMixin,
    AdminMixin,
    ReconcileMixin,
    PeopleMixin,
    RetentionMixin,
    TimeRepairMixin,
):
    """The bridge's SQLite database; open it with `Store.open(path, site_tz=...)`."""


__all__ = [
    "DaemonStore",
    "GroupResolver",
    "Incoming",
    "PersonResolver",
    "QueueStatus",
    "Rejection",
    "RetentionPolicy",
    "SinkQueue",
    "Store",
    "StoreError",
    "StoreInUseError",
    "StoreRole",
    "StoreWriteError",
    "Stored",
    "parse_utc_text",
    "utc_text",
]
