"""The vendor sinks: Go2Clock punches, McTime clock actions, TimeTrack attendances."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from bridge.config.base import _read_secret_file, _Section, http_url, secrets_wanted
from bridge.config.paths import CredentialPath
from bridge.config.sections import known_zone
from bridge.events import Action


def _default_checktypes() -> dict[Action, int]:
    return {Action.IN: 0, Action.OUT: 1, Action.BREAK_START: 2, Action.BREAK_END: 3}


class _SinkSection(_Section):
    """What every sink has. Secrets are SecretStr fields; `<name>_file` reads one from a file."""

    _secret_fields: tuple[str, ...] = ()

    enabled: bool = True
    base_url: str
    concurrency: int = Field(4, ge=1, le=64)
    timeout_seconds: float = Field(15.0, gt=0)
    # Which directory column holds the person's id at this vendor ("userid" or an extra column).
    directory_column: str = "userid"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

    @model_validator(mode="after")
    def _secrets_present(self) -> _SinkSection:
        for name in self._secret_fields:
            path = getattr(self, f"{name}_file")
            if path is not None:
                setattr(self, name, _read_secret_file(path, f"{name}_file"))
            secret = getattr(self, name)
            if self.enabled and secrets_wanted() and not (secret and secret.get_secret_value()):
                msg = f"{name} (or {name}_file) is required when the sink is enabled"
                raise ValueError(msg)
        return self

    def secrets(self) -> list[str]:
        values = [getattr(self, name) for name in self._secret_fields]
        return [value.get_secret_value() for value in values if value is not None]


class Go2ClockConfig(_SinkSection):
    _secret_fields = ("api_key",)

    base_url: str = "https://app.go2clock.com"
    api_key: SecretStr | None = None
    api_key_file: CredentialPath | None = None
    timezone: str | None = None  # the Go2Clock account's zone; default site.timezone
    checktypes: dict[Action, int] = Field(default_factory=_default_checktypes)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return None if value is None else known_zone(value)

    @model_validator(mode="after")
    def _all_checktypes(self) -> Go2ClockConfig:
        missing = set(Action) - set(self.checktypes)
        if missing:
            msg = f"checktypes lacks {', '.join(sorted(action.value for action in missing))}"
            raise ValueError(msg)
        return self


class McTimeConfig(_SinkSection):
    _secret_fields = ("api_key",)

    base_url: str = "https://mctime.com/api/v2/auth"
    api_key: SecretStr | None = None
    api_key_file: CredentialPath | None = None
    directory_column: str = "mctime_user_id"
    time_type: str = "work"
    organization_id: str | None = None
    organization_name: str | None = None
    # The docs list flat organizationId/organizationName; client code nests `organization`.
    organization_form: Literal["flat", "nested"] = "flat"
    rate_per_second: float = Field(10.0, gt=0, le=1000)
    # GET /clock pages: the docs do not say whether the first `page` is 0 or 1.
    clock_first_page: int = Field(1, ge=0, le=1)


class TimeTrackFields(_Section):
    """Body field names: the docs' table and their own example disagree."""

    username: str = "username"
    from_: str = Field("from", alias="from")
    to: str = "to"
    break_minutes: str = "breakMinutes"
    notes: str = "notes"


class TimeTrackConfig(_SinkSection):
    _secret_fields = ("api_key", "api_secret")

    base_url: str = "https://example.timetrackenterprise.com"
    api_key: SecretStr | None = None
    api_key_file: CredentialPath | None = None
    api_secret: SecretStr | None = None
    api_secret_file: CredentialPath | None = None
    directory_column: str = "timetrack_username"
    timestamps: Literal["utc", "local"] = "utc"
    max_shift_hours: float = Field(16.0, gt=0, le=72)
    fields: TimeTrackFields = Field(default_factory=TimeTrackFields)


class SinksConfig(_Section):
    go2clock: Go2ClockConfig = Field(default_factory=lambda: Go2ClockConfig(enabled=False))
    mctime: McTimeConfig = Field(default_factory=lambda: McTimeConfig(enabled=False))
    timetrack: TimeTrackConfig = Field(default_factory=lambda: TimeTrackConfig(enabled=False))

    def enabled(self) -> dict[str, _SinkSection]:
        sections = {"go2clock": self.go2clock, "mctime": self.mctime, "timetrack": self.timetrack}
        return {name: section for name, section in sections.items() if section.enabled}
