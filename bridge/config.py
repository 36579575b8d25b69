"""Settings: config.yaml, overridden by CLOCKIN_<SECTION>__<KEY> environment variables.

Secrets are SecretStr, so they print as '**********' in reprs, logs and tracebacks. Every secret
can also come from a `<name>_file` key (a systemd credential, a Docker secret).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from bridge.events import Action, PayloadFormat


class ConfigError(Exception):
    """A config that cannot run; str() names the key and the problem, and never a secret."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _read_secret_file(path: Path, key: str) -> SecretStr:
    resolved = Path(os.path.expandvars(str(path)))
    try:
        return SecretStr(resolved.read_text(encoding="utf-8").strip())
    except OSError as err:
        msg = f"cannot read {key} {resolved}: {err.strerror}"
        raise ValueError(msg) from None


class SiteConfig(_Section):
    timezone: str = "UTC"
    max_clock_skew_seconds: float = Field(300.0, gt=0)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            msg = f"unknown IANA time zone {value!r} (e.g. 'Europe/Berlin')"
            raise ValueError(msg) from None
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Subscription(_Section):
    topic: str
    format: PayloadFormat = PayloadFormat.CANONICAL
    sinks: list[str] | None = None  # where its events go; default: every enabled sink


class MqttTls(_Section):
    """TLS to the broker; a client certificate is optional."""

    ca_file: Path | None = None  # None: the system's trusted CAs
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip host name verification (a test broker on an IP address)

    @model_validator(mode="after")
    def _files_exist(self) -> MqttTls:
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                msg = f"{name}: no such file {path}"
                raise ValueError(msg)
        if (self.cert_file is None) != (self.key_file is None):
            msg = "cert_file and key_file go together"
            raise ValueError(msg)
        return self


class MqttConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = Field("clockin-bridge", min_length=1, max_length=23)
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    keepalive: int = Field(30, ge=5, le=3600)
    reconnect_max_seconds: float = Field(30.0, gt=0)
    subscriptions: list[Subscription] = Field(
        default_factory=lambda: [Subscription(topic="clockin/+/events")], min_length=1
    )
    # Feedback to the terminal after each stored event ({terminal} is filled in); null: none.
    ack_topic: str | None = "clockin/{terminal}/ack"
    ack_delivery: bool = False  # a second message when the delivery succeeds or dies
    # The bridge's availability, retained: "online", and "offline" as its MQTT last will.
    status_topic: str = "clockin/bridge/status"
    tls: MqttTls | None = None

    @field_validator("ack_topic")
    @classmethod
    def _ack_topic_names_terminal(cls, value: str | None) -> str | None:
        if value is not None and "{terminal}" not in value:
            msg = "must contain {terminal}, e.g. clockin/{terminal}/ack"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _password_from_file(self) -> MqttConfig:
        if self.password_file is not None:
            self.password = _read_secret_file(self.password_file, "mqtt.password_file")
        return self


class StoreConfig(_Section):
    path: Path = Path("clockin-bridge.db")
    max_batch: int = Field(500, ge=1, le=10_000)


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
    api_key_file: Path | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else _SinkSection._http_url(value)


class Q2Source(_DirectorySource):
    """OpenTimeClock Q2 users (api/q2QueryUsers): the badge, name, employee number, e-mail."""

    _secret_fields = ("developer_token",)

    url: str = "https://api1.opentimeclock.com/Jun-Inside-VPC"
    company_id: str | None = None
    developer_token: SecretStr | None = None
    developer_token_file: Path | None = None
    badge_field: Literal["digitId", "employeeNumber"] = "digitId"
    max_records: int = Field(5000, ge=1, le=5000)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _SinkSection._http_url(value)

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
        return None if value is None else _SinkSection._http_url(value)

    @property
    def vendor_field(self) -> str:
        if self.match_field:
            return self.match_field
        return "employeeNumber" if self.match_on == "employee_number" else "email"


class McTimeSource(_AccountSource):
    _secret_fields = ("api_key",)

    api_key: SecretStr | None = None  # null: sinks.mctime.api_key
    api_key_file: Path | None = None
    first_page: int = Field(1, ge=0, le=1)  # GET /users pages: the docs do not say 0 or 1


class TimeTrackSource(_AccountSource):
    _secret_fields = ("api_key", "api_secret")

    api_key: SecretStr | None = None  # null: sinks.timetrack.api_key
    api_key_file: Path | None = None
    api_secret: SecretStr | None = None  # null: sinks.timetrack.api_secret
    api_secret_file: Path | None = None
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
    path: Path | None = None
    reload_seconds: float = Field(5.0, gt=0)
    sync_minutes: float = Field(60.0, gt=0)
    sources: DirectorySources = Field(default_factory=DirectorySources)

    def secret_values(self) -> list[str]:
        """The sources' own secrets (the sinks' are in Settings.secret_values)."""
        return [secret for source in self.sources.enabled().values() for secret in source.secrets()]


class DedupeConfig(_Section):
    window_seconds: float = Field(60.0, ge=0)


class RetryConfig(_Section):
    initial_seconds: float = Field(1.0, gt=0)
    max_seconds: float = Field(300.0, gt=0)
    max_age_days: float = Field(14.0, gt=0)
    pause_probe_seconds: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.max_seconds < self.initial_seconds:
            msg = "max_seconds must be >= initial_seconds"
            raise ValueError(msg)
        return self


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
        if not value.startswith(("http://", "https://")):
            msg = "must start with http:// or https://"
            raise ValueError(msg)
        return value.rstrip("/")

    @model_validator(mode="after")
    def _secrets_present(self) -> _SinkSection:
        for name in self._secret_fields:
            path = getattr(self, f"{name}_file")
            if path is not None:
                setattr(self, name, _read_secret_file(path, f"{name}_file"))
            secret = getattr(self, name)
            if self.enabled and not (secret and secret.get_secret_value()):
                msg = f"{name} (or {name}_file) is required when the sink is enabled"
                raise ValueError(msg)
        return self


class Go2ClockConfig(_SinkSection):
    _secret_fields = ("api_key",)

    base_url: str = "https://app.go2clock.com"
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    timezone: str | None = None  # the Go2Clock account's zone; default site.timezone
    checktypes: dict[Action, int] = Field(default_factory=_default_checktypes)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return None if value is None else SiteConfig._known_zone(value)

    @model_validator(mode="after")
    def _all_checktypes(self) -> Go2ClockConfig:
        missing = set(Action) - set(self.checktypes)
        if missing:
            msg = f"checktypes lacks {sorted(missing)}"
            raise ValueError(msg)
        return self


class McTimeConfig(_SinkSection):
    _secret_fields = ("api_key",)

    base_url: str = "https://mctime.com/api/v2/auth"
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
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
    api_key_file: Path | None = None
    api_secret: SecretStr | None = None
    api_secret_file: Path | None = None
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


class ReconcileQ2Config(_Section):
    """OpenTimeClock Q2, read-only: time cards compared by `reconcile --sink q2`."""

    enabled: bool = False  # include Q2 in the daily run
    base_url: str = "https://api1.opentimeclock.com/Jun-Inside-VPC"
    company_id: str | None = None
    developer_token: SecretStr | None = None
    developer_token_file: Path | None = None
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
        return _SinkSection._http_url(value)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return None if value is None else SiteConfig._known_zone(value)

    @model_validator(mode="after")
    def _token(self) -> ReconcileQ2Config:
        if self.developer_token_file is not None:
            self.developer_token = _read_secret_file(
                self.developer_token_file, "developer_token_file"
            )
        if self.enabled and not (self.company_id and self.developer_token):
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


class HttpConfig(_Section):
    """Health, readiness, metrics and the status page."""

    enabled: bool = True
    listen: str = "127.0.0.1:9108"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            msg = "must be HOST:PORT, e.g. 127.0.0.1:9108"
            raise ValueError(msg)
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class LogConfig(_Section):
    level: str = "info"
    format: str = "auto"  # json | console | auto (console on a terminal, json otherwise)
    summary_seconds: float = Field(60.0, gt=0)  # how often an ongoing outage is summarised

    @field_validator("level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            msg = "must be one of debug, info, warning, error"
            raise ValueError(msg)
        return value.lower()

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in {"json", "console", "auto"}:
            msg = "must be one of json, console, auto"
            raise ValueError(msg)
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLOCKIN_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    site: SiteConfig = Field(default_factory=SiteConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    directory: DirectoryConfig = Field(default_factory=DirectoryConfig)
    dedupe: DedupeConfig = Field(default_factory=DedupeConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    sinks: SinksConfig = Field(default_factory=SinksConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file (passed as init values), as operators expect.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _routes_name_enabled_sinks(self) -> Settings:
        enabled = self.sinks.enabled()
        for number, subscription in enumerate(self.mqtt.subscriptions):
            unknown = set(subscription.sinks or ()) - set(enabled)
            if unknown:
                msg = (
                    f"mqtt.subscriptions.{number}.sinks names {sorted(unknown)}, which are not"
                    f" enabled sinks (enabled: {sorted(enabled) or 'none'})"
                )
                raise ValueError(msg)
        return self

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redaction."""
        found = [self.mqtt.password]
        for section in (self.sinks.go2clock, self.sinks.mctime, self.sinks.timetrack):
            found += [getattr(section, name) for name in section._secret_fields]
        found.append(self.reconcile.q2.developer_token)
        values = [secret.get_secret_value() for secret in found if secret is not None]
        return values + self.directory.secret_values()

    @property
    def go2clock_tz(self) -> ZoneInfo:
        return ZoneInfo(self.sinks.go2clock.timezone or self.site.timezone)

    @property
    def q2_tz(self) -> ZoneInfo:
        return ZoneInfo(self.reconcile.q2.timezone or self.site.timezone)


def _format_errors(err: ValidationError) -> str:
    lines = []
    for problem in err.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        lines.append(f"{where}: {problem['msg']}")
    return "; ".join(lines)


def _yaml_problem(path: Path, err: yaml.YAMLError) -> str:
    # str(err) quotes the offending line, which may hold a secret: keep only the position.
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        return f"config file {path} is not valid YAML: {err.problem} ({where})"
    return f"config file {path} is not valid YAML"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        msg = f"cannot read config file {path}: {err.strerror}"
        raise ConfigError(msg) from None
    except UnicodeDecodeError:
        msg = f"config file {path} is not UTF-8 text"
        raise ConfigError(msg) from None
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_problem(path, err)) from None
    except ValueError:  # a timestamp-looking scalar that is no date, e.g. 2024-02-30
        msg = f"config file {path} holds a value YAML cannot convert (an impossible date?)"
        raise ConfigError(msg) from None
    if loaded is not None and not isinstance(loaded, dict):
        msg = f"config file {path} must hold a mapping of sections"
        raise ConfigError(msg)
    # Keyword arguments must be strings; str() lets `1:` fail as an unknown key instead.
    return {str(key): value for key, value in (loaded or {}).items()}


def load_settings(path: Path | None) -> Settings:
    """Read the YAML file (if any) and the environment; raise ConfigError on any problem."""
    data = {} if path is None else _read_yaml(path)
    try:
        # The file's values are init kwargs; pydantic-settings deep-merges the environment over
        # them, so CLOCKIN_SINKS__GO2CLOCK__API_KEY keeps the file's other go2clock keys.
        return Settings(**data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None
    except SettingsError as err:  # an environment value that is not valid JSON for its field
        raise ConfigError(f"CLOCKIN_* environment: {err}") from None
