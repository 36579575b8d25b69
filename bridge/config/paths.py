"""Where the bridge's files are, whichever way it runs.

Every path in config.yaml (and in a CLOCKIN_* variable) that is relative resolves against the
folder of the config file, never the working directory: systemd starts the service in `/` and
the container in its WORKDIR. Absolute paths are taken as given. A secret's `<name>_file` is a
credential name: relative, it resolves against the credentials folder.

Three folders, each with a default per way of running:
- configuration: the config file's folder (the unit's --config is in
  $CONFIGURATION_DIRECTORY, the image's in /etc/clockin-bridge);
- state (store.path's default folder): $STATE_DIRECTORY under systemd; otherwise
  /var/lib/clockin-bridge for a config file in /etc/clockin-bridge (an installed bridge, the
  container); otherwise var/ beside the config file (a checkout);
- credentials: $CREDENTIALS_DIRECTORY (systemd's LoadCredential=; the image sets /run/secrets,
  where Docker puts secrets); otherwise credentials/ beside the config file.

An operator's shell has none of systemd's variables: there a config file in
/etc/clockin-bridge/ means an installed bridge, whose state is in /var/lib/clockin-bridge/ (the
unit's StateDirectory=) and whose credentials are the files the unit's LoadCredential= reads,
/etc/clockin-bridge/credentials/. So `clockin-bridge status` finds the service's database.
`${STATE_DIRECTORY}`, `${CONFIGURATION_DIRECTORY}` and `${CREDENTIALS_DIRECTORY}` in a path
expand to these folders (set or not); any other `${VAR}` to the environment's value.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

# An installed bridge: the config folder systemd's ConfigurationDirectory=clockin-bridge names,
# the container's mount point, and the state folder that goes with it.
INSTALLED_CONFIG_DIR = Path("/etc/clockin-bridge")
INSTALLED_STATE_DIR = Path("/var/lib/clockin-bridge")
DATABASE_NAME = "clockin-bridge.db"

_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def _first(value: str | None) -> Path | None:
    # systemd joins several StateDirectory= folders with ':'; the first is the bridge's.
    if not value:
        return None
    return Path(value.split(":", 1)[0])


@dataclass(frozen=True)
class Layout:
    """The three folders for one config file, in one way of running."""

    config_dir: Path
    state_dir: Path
    credentials_dir: Path

    @classmethod
    def of(cls, config: Path | None, environ: Mapping[str, str] | None = None) -> Layout:
        env = os.environ if environ is None else environ
        config_dir = (config.parent if config is not None else Path()).absolute()
        installed = config_dir == INSTALLED_CONFIG_DIR
        state_dir = _first(env.get("STATE_DIRECTORY")) or (
            INSTALLED_STATE_DIR if installed else config_dir / "var"
        )
        credentials_dir = _first(env.get("CREDENTIALS_DIRECTORY")) or config_dir / "credentials"
        return cls(config_dir=config_dir, state_dir=state_dir, credentials_dir=credentials_dir)

    def expand(self, text: str) -> str:
        """`${VAR}` and `$VAR`: the three folders, then the environment; unknown ones stay."""
        folders = {
            "CONFIGURATION_DIRECTORY": self.config_dir,
            "STATE_DIRECTORY": self.state_dir,
            "CREDENTIALS_DIRECTORY": self.credentials_dir,
        }

        def value(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            if name in folders:
                return str(folders[name])
            return os.environ.get(name, match.group(0))

        return _VARIABLE.sub(value, text)

    def resolve(self, path: Path, *, base: Path) -> Path:
        expanded = Path(self.expand(str(path)))
        return expanded if expanded.is_absolute() else base / expanded


_CURRENT: ContextVar[Layout | None] = ContextVar("clockin_config_layout", default=None)


@contextlib.contextmanager
def layout_for(config: Path | None) -> Iterator[Layout]:
    """The layout the settings validated inside this block resolve their paths with."""
    layout = Layout.of(config)
    token = _CURRENT.set(layout)
    try:
        yield layout
    finally:
        _CURRENT.reset(token)


def current_layout() -> Layout:
    """The layout of the config file being loaded; outside load_settings, the working
    directory's (a section built in code, as tests do)."""
    return _CURRENT.get() or Layout.of(None)


def _config_relative(path: Path) -> Path:
    layout = current_layout()
    return layout.resolve(path, base=layout.config_dir)


def _credential(path: Path) -> Path:
    layout = current_layout()
    return layout.resolve(path, base=layout.credentials_dir)


def default_database() -> Path:
    return current_layout().state_dir / DATABASE_NAME


# A file the operator names (the directory CSV, TLS files): relative to the config file.
ConfigPath = Annotated[Path, AfterValidator(_config_relative)]
# A secret's file: a credential name (LoadCredential=, a Docker secret) or a path.
CredentialPath = Annotated[Path, AfterValidator(_credential)]
