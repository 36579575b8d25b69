"""Every command of `clockin-bridge`, in the order `--help` lists them: a new command is a module
in this package with a `register(subparsers, common_options)`, and one line here."""

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
