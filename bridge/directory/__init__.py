"""People from the vendors: Go2Clock employees, OpenTimeClock Q2 users, McTime and TimeTrack
users, merged with the directory file (the operator's override) into one badge directory.

One module per source, `merge` (pure) for the merging, the cache in bridge.store.people,
`sync` for one round of fetching, `live` for what the daemon looks badges up in, `file` for the
operator's CSV, `people` for what the daemon resolves against.

Import from those modules themselves: this package re-exports nothing, so importing one of them
never drags in the vendor registry that `build` needs (the vendors' directory sources import
`records` and `http` from here).
"""
