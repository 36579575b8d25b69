"""People from the vendors: Go2Clock employees, OpenTimeClock Q2 users, McTime and TimeTrack
users, merged with the directory file (the operator's override) into one badge directory.

One module per source, `merge` (pure) for the merging, the cache in bridge.store.people,
`sync` for one round of fetching, `live` for what the daemon looks badges up in.
"""

from bridge.directory.build import ORDER, Source, build_sources
from bridge.directory.live import LiveDirectory, cached_records
from bridge.directory.merge import FILE, Merged, merge
from bridge.directory.records import Record, SourceError
from bridge.directory.sync import Outcome, sync

__all__ = [
    "FILE",
    "ORDER",
    "LiveDirectory",
    "Merged",
    "Outcome",
    "Record",
    "Source",
    "SourceError",
    "build_sources",
    "cached_records",
    "merge",
    "sync",
]
