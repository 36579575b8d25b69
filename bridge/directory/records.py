"""What a directory source hands back, and how its failures look. Pure: no I/O."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pydantic import SecretStr

from bridge.config import ConfigError
from bridge.events import PayloadError, normalise_badge

# Directory columns every source speaks (besides the per-sink id columns, whose names come
# from each sink's `directory_column`).
NAME = "name"
EMPLOYEE_NUMBER = "employee_number"
EMAIL = "email"
ROLE = "role"
# Columns that describe a person without identifying them: two sources may spell them
# differently without that being a conflict (the first source's value stands).
DESCRIPTIVE = frozenset({NAME, ROLE, "department"})


class SourceError(Exception):
    """A source could not be read (unreachable, timeout, 5xx, key refused, a bad answer).
    str() says why in a few words and never holds a secret or a URL with parameters."""


def credential(own: SecretStr | None, fallback: SecretStr | None, key: str) -> SecretStr:
    """A source's own secret, else its sink's; ConfigError when neither is set."""
    secret = own if own is not None and own.get_secret_value() else fallback
    if secret is None or not secret.get_secret_value():
        msg = f"directory.sources.{key} (or {key}_file, or the sink's) is required when enabled"
        raise ConfigError(msg)
    return secret


@dataclass(frozen=True, slots=True)
class Record:
    """One person as a source knows them.

    Badge sources (Go2Clock, Q2) give `badge`. Account sources (McTime, TimeTrack) give no
    badge but a `join_on` column (employee_number or email) whose value joins the record to
    the people the badge sources and the file know.
    """

    badge: str | None
    fields: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    join_on: str | None = None

    def to_row(self) -> dict[str, object]:
        return {"badge": self.badge, "join_on": self.join_on, "fields": dict(self.fields)}

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> Record:
        fields = row["fields"]
        if not isinstance(fields, Mapping):
            msg = f"a cached record's fields are a {type(fields).__name__}, not a mapping"
            raise TypeError(msg)
        badge, join_on = row.get("badge"), row.get("join_on")
        return cls(
            badge=str(badge) if badge is not None else None,
            # column names interned: 50,000 records share one "userid", not one each
            fields=MappingProxyType({sys.intern(str(k)): str(v) for k, v in fields.items()}),
            join_on=str(join_on) if join_on is not None else None,
        )


def clean_fields(values: Mapping[str, object]) -> dict[str, str]:
    """Columns with a value, as trimmed text (vendors send ids as numbers or strings)."""
    cleaned = {}
    for column, value in values.items():
        if value is None or isinstance(value, bool | dict | list):
            continue
        text = str(value).strip()
        if text and text.isprintable():
            cleaned[column] = text
    return cleaned


def badge_of(value: object) -> str | None:
    """The normalised badge, or None when the vendor's field holds none (or nonsense)."""
    if value is None or isinstance(value, bool) or str(value).strip() == "":
        return None
    try:
        return normalise_badge(str(value).strip())
    except PayloadError:
        return None


def join_key(column: str, value: str) -> str:
    """How two values of a join column are compared: e-mail ignores case."""
    value = value.strip()
    return value.casefold() if column == EMAIL else value
