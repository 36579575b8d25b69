"""The PostgreSQL store, for several bridges on one database (issue 16; in progress).

Built so far: connection and migrations (connection.py, schema.py), ingest with duplicate
layers 1 and 2, inference and the late-swipe hold (intake.py), and the queue shared by several
instances: claims with SKIP LOCKED, leases, guarded settles (queue.py), with status counts
(inspect.py); the operator commands' reads and guarded changes with their repair trace
(admin.py, repairs.py, reconcile.py, rejected.py: the bounded rejected payloads).
`tests/test_store_contract.py` runs the same tests against this and the SQLite
store. Not wired to `store.url` yet: the daemon and the commands still use SQLite only.
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
