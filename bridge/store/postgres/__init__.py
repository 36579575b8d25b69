"""The PostgreSQL store, for several bridges on one database (`store.url`; README, "More than
one gateway"). The same contract as the SQLite store (bridge.store.contract), one mixin per
role as there: connection and migrations (connection.py, schema.py), ingest (intake.py), the
queue shared by several instances with leases (queue.py), status and the page's views
(inspect.py), the bridges' heartbeats and the watch for work others made due (instances.py),
retention, the directory cache, reconcile, the operators' changes with their repair trace
(admin.py, repairs.py, rejected.py) and booking a held time (time_repair.py).
tests/test_store_contract*.py run the same tests against this and the SQLite store.
"""

from bridge.store.postgres.admin import PostgresAdmin
from bridge.store.postgres.inspect import PostgresInspect
from bridge.store.postgres.instances import PostgresInstances
from bridge.store.postgres.intake import PostgresIntake
from bridge.store.postgres.people import PostgresPeople
from bridge.store.postgres.queue import PostgresQueue
from bridge.store.postgres.reconcile import PostgresReconcile
from bridge.store.postgres.repairs import PostgresRepairs
from bridge.store.postgres.retention import PostgresRetention
from bridge.store.postgres.time_repair import PostgresTimeRepair


class PostgresStore(
    PostgresIntake,
    PostgresQueue,
    PostgresInspect,
    PostgresInstances,
    PostgresRetention,
    PostgresPeople,
    PostgresAdmin,
    PostgresReconcile,
    PostgresRepairs,
    PostgresTimeRepair,
):
    """Open with `PostgresStore.open(url, site_tz=...)`."""


__all__ = ["PostgresStore"]
