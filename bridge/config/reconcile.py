"""Reconciliation against what the vendors hold (and OpenTimeClock Q2)."""

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


class ReconcileQ2Config(_Section):
    """OpenTimeClock Q2, read-only: time cards compared by `reconcile --sink q2`."""

    enabled: bool = False  # include Q2 in the daily run
    base_url: str = "https://api1.opentimeclock.com/Jun-Inside-VPC"
    company_id: str | None = None
    developer_token: SecretStr | None = None
    developer_token_file: CredentialPath | None = None
    timezone: str | None = None  # zone of Q2's wall times; default site.timezone
    # Which directory column holds the person's id at Q2, and which time card field it is.
    directory_column: str = "userid"
    person_field: Literal["employeeNumber", "digitId", "userName", "userFullName"] = (
        "employeeNumber"
    )
    max_records: int = Field(5000, ge=1, le=5000)
    timeout_seconds: float = Field(30.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return None if value is None else known_zone(value)

    @model_validator(mode="after")
    def _token(self) -> ReconcileQ2Config:
        if self.developer_token_file is not None:
            self.developer_token = _read_secret_file(
                self.developer_token_file, "developer_token_file"
            )
        if self.enabled and secrets_wanted() and not (self.company_id and self.developer_token):
            msg = "company_id and developer_token (or developer_token_file) are required"
            raise ValueError(msg)
        return self


class ReconcileConfig(_Section):
    """`clockin-bridge reconcile`, and its optional daily run inside the daemon."""

    daily_at: str | None = None  # "HH:MM" site-local; null: no daily run
    days: int = Field(1, ge=1, le=31)  # the daily run compares the last N complete days
    q2: ReconcileQ2Config = Field(default_factory=ReconcileQ2Config)

    @field_validator("daily_at")
    @classmethod
    def _hh_mm(cls, value: str | None) -> str | None:
        if value is None:
            return None
        hours, _, minutes = value.partition(":")
        if not (
            len(hours) == len(minutes) == 2
            and hours.isdigit()
            and minutes.isdigit()
            and int(hours) < 24
            and int(minutes) < 60
        ):
            msg = "must be HH:MM (24-hour, site-local), e.g. 06:30, or null"
            raise ValueError(msg)
        return value
