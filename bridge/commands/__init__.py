"""The operator's repair and inspection commands, one module per command group.

Each works beside a running daemon: short transactions, guarded state changes (see
bridge.store.admin). Exit codes: 0 done, 1 an id not found or not in the expected state,
2 a config (or command line) error.
"""

from __future__ import annotations

from typing import Any

from bridge.commands import (
    backup,
    check_config,
    daemon,
    dead,
    directory,
    held,
    reconcile,
    rejected,
    replay,
    simulate,
    status,
    unmapped,
)
from bridge.commands.common import common_options
from bridge.commands.table import format_table

__all__ = ["COMMANDS", "format_table", "register"]

# Every command of `clockin-bridge`, in the order `--help` lists them: a new command is a module
# with a `register(subparsers, common_options)` and one line here.
COMMANDS = (
    daemon,
    status,
    dead,
    rejected,
    unmapped,
    held,
    replay,
    reconcile,
    directory,
    backup,
    simulate,
    check_config,
)


def register(commands: Any) -> None:
    """Add every command to the CLI's subparsers."""
    common = common_options()
    for module in COMMANDS:
        module.register(commands, common)
