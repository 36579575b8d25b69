"""Reconciliation: read back what a vendor holds and compare it with what the bridge delivered.

One module per role: `window` (the date range and its chunks), `fetch` (the shared HTTP read),
one reader per vendor (`go2clock`, `mctime`, `timetrack`, `q2`), `compare` (pure: expected
entries from delivered events, punch and entry comparison), `report` (table, JSON, CSV),
`run` (store + reader + compare for one sink) and `daily` (the optional run in the daemon).

Readers only read. Only Go2Clock punches may be queued again (`--requeue-missing`): the vendor
refuses a second userid + checktime, so a resend is harmless. McTime and TimeTrack keep state
per person (a running clock, an open shift), and Q2 is read-only: those are reported only.
"""
