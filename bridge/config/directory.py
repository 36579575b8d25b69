"""The people directory: the CSV file and the vendor sources synced into it."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from bridge.config.base import _read_secret_file, _Section, http_url
from bridge.config.paths import ConfigPath, CredentialPath


class _DirectorySource(_Section):
    """A vendor the directory reads people from. Secrets as in the sinks: SecretStr, or a
    `<name>_file`; a source's null credential falls back to its sink's (where it has one)."""

    _secret_fields: tuple[str, ...] = ()

    enabled: bool = False
    timeout_seconds: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _secret_files(self) -> _DirectorySource:
        for name in self._secret_fields:
            path = getattr(self, f"{name}_file")
            if path is not None:
                setattr(self, name, _read_secret_file(path, f"{name}_file"))
        return self

    def secrets(self) -> list[str]:
        values = [getattr(self, name) for name in self._secret_fields]
        return [value.get_secret_value() for value in values if value is not None]


class Go2ClockSource(_DirectorySource):
    """Go2Clock employees (POST /api/users/: userid and idcard, the badge; /api/employees/:
    names)."""

    _secret_fields = ("api_key",)

    base_url: str | None = None  # null: sinks.go2clock.base_url
    api_key: SecretStr | None = None  # null: sinks.go2clock.api_key
    api_key_file: CredentialPath | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value)


class Q2Source(_DirectorySource):
    """OpenTimeClock Q2 users (api/q2QueryUsers): the badge, name, employee number, e-mail."""

    _secret_fields = ("developer_token",)

    url: str = "https://api1.opentimeclock.com/Jun-Inside-VPC"
    company_id: str | None = None
    developer_token: SecretStr | None = None
    developer_token_file: CredentialPath | None = None
    badge_field: Literal["digitId", "employeeNumber"] = "digitId"
    max_records: int = Field(5000, ge=1, le=5000)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

    @model_validator(mode="after")
    def _credentials(self) -> Q2Source:
        token = self.developer_token
        if self.enabled and not (self.company_id and token and token.get_secret_value()):
            msg = "company_id and developer_token (or developer_token_file) are required"
            raise ValueError(msg)
        return self


class _AccountSource(_DirectorySource):
    """Users of a sink's vendor, joined to a person by employee number or e-mail."""

    base_url: str | None = None  # null: the sink's base_url
    match_on: Literal["employee_number", "email"] = "employee_number"
    match_field: str | None = None  # the vendor's field; null: employeeNumber or email

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value)

    @property
    def vendor_field(self) -> str:
        if self.match_field:
            return self.match_field
        return "employeeNumber" if self.match_on == "employee_number" else "email"


class McTimeSource(_AccountSource):
    _secret_fields = ("api_key",)

    api_key: SecretStr | None = None  # null: sinks.mctime.api_key
    api_key_file: CredentialPath | None = None
    first_page: int = Field(1, ge=0, le=1)  # GET /users pages: the docs do not say 0 or 1


class TimeTrackSource(_AccountSource):
    _secret_fields = ("api_key", "api_secret")

    api_key: SecretStr | None = None  # null: sinks.timetrack.api_key
    api_key_file: CredentialPath | None = None
    api_secret: SecretStr | None = None  # null: sinks.timetrack.api_secret
    api_secret_file: CredentialPath | None = None
    page_size: int = Field(1000, ge=1, le=1000)


class DirectorySources(_Section):
    go2clock: Go2ClockSource = Field(default_factory=Go2ClockSource)
    q2: Q2Source = Field(default_factory=Q2Source)
    mctime: McTimeSource = Field(default_factory=McTimeSource)
    timetrack: TimeTrackSource = Field(default_factory=TimeTrackSource)

    def enabled(self) -> dict[str, _DirectorySource]:
        sections: dict[str, _DirectorySource] = {
            "go2clock": self.go2clock,
            "q2": self.q2,
            "mctime": self.mctime,
            "timetrack": self.timetrack,
        }
        return {name: section for name, section in sections.items() if section.enabled}


class DirectoryConfig(_Section):
    path: ConfigPath | None = None
    reload_seconds: float = Field(5.0, gt=0)
    sync_minutes: float = Field(60.0, gt=0)
    sources: DirectorySources = Field(default_factory=DirectorySources)

    def secret_values(self) -> list[str]:
        """The sources' own secrets (the sinks' are in Settings.secret_values)."""
        return [secret for source in self.sources.enabled().values() for secret in source.secrets()]
