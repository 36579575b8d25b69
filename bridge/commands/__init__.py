"""The operator's repair and inspection commands, one module per command group.

Each works beside a running daemon: short transactions, guarded state changes (see
bridge.store.admin). Exit codes: 0 done, 1 an id not found or not in the expected state,
2 a config (or command line) error.
"""
