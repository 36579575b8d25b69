"""The pieces every config section shares: the error type, strictness, secrets from files."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    SecretStr,
)


class ConfigError(Exception):
    """A config that cannot run; str() names the key and the problem, and never a secret."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# False while a command that never talks to a vendor loads the config (status, dead list, …):
# it then neither reads credential files nor requires them, so an operator's shell, where
# systemd's $CREDENTIALS_DIRECTORY does not exist, can still inspect the daemon's database.
_secrets_wanted: ContextVar[bool] = ContextVar("secrets_wanted", default=True)


@contextlib.contextmanager
def without_secrets() -> Iterator[None]:
    token = _secrets_wanted.set(False)
    try:
        yield
    finally:
        _secrets_wanted.reset(token)


def secrets_wanted() -> bool:
    return _secrets_wanted.get()


def _read_secret_file(path: Path, key: str) -> SecretStr | None:
    """The secret in a file (already resolved: bridge.config.paths.CredentialPath), stripped.
    An empty file is reported as such, not as a missing secret. None when secrets are not
    wanted (without_secrets)."""
    if not secrets_wanted():
        return None
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as err:
        msg = f"cannot read {key} {path}: {err.strerror}"
        raise ValueError(msg) from None
    except UnicodeDecodeError:
        msg = f"{key} {path} is not UTF-8 text"
        raise ValueError(msg) from None
    if not secret:
        msg = f"{key} {path} is empty"
        raise ValueError(msg)
    return SecretStr(secret)


def http_url(value: str) -> str:
    """A vendor base URL: http(s), without a trailing slash."""
    if not value.startswith(("http://", "https://")):
        msg = "must start with http:// or https://"
        raise ValueError(msg)
    return value.rstrip("/")
