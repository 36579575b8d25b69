"""The operator's repair and inspection commands, one module per command group.

Each works beside a running daemon: short transactions, guarded state changes (see
bridge.store.admin). Exit codes: 0 done, 1 an id not found or not in the expected state,
2 a config (or command line) error.
"""

from __future__ import annotations

from typing import Any

from bridge.commands import check_config, dead, held, rejected, replay, unmapped
from bridge.commands.common import common_options
from bridge.commands.table import format_table

__all__ = ["format_table", "register"]


def register(commands: Any) -> None:
    """Add every operator command to the CLI's subparsers."""
    common = common_options()
    for module in (dead, rejected, unmapped, held, replay, check_config):
        module.register(commands, common)
