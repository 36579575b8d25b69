"""The daemon's own sections: site, MQTT, store, dedupe, inference, retry, HTTP, logs."""

from __future__ import annotations

import re
import socket
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge.config.base import _read_secret_file, _Section
from bridge.config.paths import ConfigPath, CredentialPath, default_database
from bridge.events import PayloadFormat, TimeLimits
from bridge.store.inference import Between, InferenceRules, ShiftWindow


def known_zone(value: str) -> str:
    """`value` if it names an IANA time zone; every section's `timezone` validator."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        msg = f"unknown IANA time zone {value!r} (e.g. 'Europe/Berlin')"
        raise ValueError(msg) from None
    return value


class SiteConfig(_Section):
    timezone: str = "UTC"
    max_clock_skew_seconds: float = Field(300.0, gt=0)
    # An event time outside [min_event_time, now + max_future_seconds] is held, not booked: a
    # device clock reset to 1970 or set years ahead is for an operator to look at (`held
    # complete ID --use-received-time` books it when the gateway received it).
    min_event_time: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    max_future_seconds: float = Field(86400.0, gt=0)

    @field_validator("min_event_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @property
    def time_limits(self) -> TimeLimits:
        return TimeLimits(
            earliest=self.min_event_time, max_future=timedelta(seconds=self.max_future_seconds)
        )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_zone(value)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Subscription(_Section):
    topic: str
    format: PayloadFormat = PayloadFormat.CANONICAL
    sinks: list[str] | None = None  # where its events go; default: every enabled sink


class MqttTls(_Section):
    """TLS to the broker; a client certificate is optional."""

    ca_file: ConfigPath | None = None  # None: the system's trusted CAs
    cert_file: ConfigPath | None = None
    key_file: ConfigPath | None = None
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


MQTT311_MAX_CLIENT_ID = 23


class MqttConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    # "3.1.1" (clean_session false) or "5" (clean_start false, with session_expiry_seconds).
    # Before client_id: its length limit depends on it.
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    # `{hostname}` is replaced by the machine's host name: one config for several bridges,
    # each with its own stable id.
    client_id: str = Field("clockin-bridge", min_length=1)
    # MQTT 5: how long the broker keeps the session (and the messages for it) after the bridge
    # disconnects. Required with protocol 5: without it the session ends at the disconnect and
    # what arrives meanwhile is lost.
    session_expiry_seconds: int | None = Field(None, ge=1, le=0xFFFFFFFF)
    # MQTT 5: unacknowledged messages the broker may send at once; null: 2 x store.max_batch
    # (the read gate's high mark), at most 65535.
    receive_maximum: int | None = Field(None, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    password_file: CredentialPath | None = None
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

    @field_validator("client_id")
    @classmethod
    def _expand_hostname(cls, value: str, info: ValidationInfo) -> str:
        value = value.replace("{hostname}", socket.gethostname())
        # MQTT 3.1.1 allows a broker to refuse ids over 23 characters; 5 has no such limit.
        if info.data.get("protocol") != "5" and len(value) > MQTT311_MAX_CLIENT_ID:
            msg = (
                f"{value!r} is longer than {MQTT311_MAX_CLIENT_ID} characters, which MQTT"
                " 3.1.1 brokers may refuse (use protocol 5)"
            )
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _session_is_explicit(self) -> MqttConfig:
        if self.protocol == "5" and self.session_expiry_seconds is None:
            msg = (
                "protocol 5 needs session_expiry_seconds (how long the broker keeps the"
                " bridge's messages while it is away; without it they are lost at a disconnect)"
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _password_from_file(self) -> MqttConfig:
        if self.password_file is not None:
            self.password = _read_secret_file(self.password_file, "mqtt.password_file")
        return self


class StoreConfig(_Section):
    # null: clockin-bridge.db in the state folder of this way of running (bridge.config.paths)
    path: ConfigPath = Field(default_factory=default_database)
    # PostgreSQL instead of the SQLite file, for several bridges on one database:
    # postgresql://USER@HOST:5432/DATABASE, without a password (that comes from password_file).
    url: str | None = None
    password_file: CredentialPath | None = None
    password: SecretStr | None = None  # read from password_file, never written in config
    # This bridge's id among those sharing the database ({hostname}: the machine's name). Two
    # running bridges with one id are refused.
    instance_id: str = Field("{hostname}", min_length=1, max_length=200)
    # A claim of an instance that stopped renewing it (dead, cut off) goes back to the others
    # after this many seconds.
    lease_seconds: float = Field(30.0, ge=2, le=3600)
    max_batch: int = Field(500, ge=1, le=10_000)
    # How long an ingest's transaction stays open for what comes meanwhile (one flush, and
    # one copy of each page touched, for all of it: what spares a gateway's flash). The
    # terminal is answered at once; the PUBACK comes at most this much later; a claim or
    # settle that needs no flush (bridge/store/durability.py) joins the open transaction, or
    # waits at most twice this. 0: each write is committed at once.
    commit_wait_seconds: float = Field(0.5, ge=0, le=5)
    # Rejected payloads kept, all together (MiB); the oldest are pruned first, and counted.
    rejected_max_mb: int = Field(64, ge=1, le=1_000_000)
    # Rejected messages (and events held for an implausible time) stored per minute, per
    # terminal and for all terminals together; beyond that they are only counted
    # (clockin_rejected_not_kept_total) and a warning names the terminal that floods.
    rejected_per_terminal_per_minute: int = Field(60, ge=1)
    rejected_per_minute: int = Field(600, ge=1)
    # Retention (bridge.store.retention), applied when the bridge is quiet. Events whose every
    # delivery ended (delivered, dropped) more than retain_days ago are deleted; nothing
    # undelivered ever is. archive_dir (null: none): each pruned event with its deliveries is
    # first written there, gzipped JSON lines per local day. A pruned event's key is kept
    # dedupe_days more (at least retry.max_age_days), so a late resend is still a duplicate.
    # Rejected payloads are deleted after rejected_retain_days (besides rejected_max_mb).
    retain_days: int = Field(400, ge=2)  # 2: never an event of the local day in progress
    archive_dir: ConfigPath | None = None
    dedupe_days: int = Field(60, ge=1)
    rejected_retain_days: int = Field(30, ge=1)

    @field_validator("path", mode="before")
    @classmethod
    def _default_when_null(cls, value: object) -> object:
        return default_database() if value is None else value

    @field_validator("url")
    @classmethod
    def _postgres_without_a_password(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            msg = "must be a postgresql:// URL (or null: the SQLite file store.path)"
            raise ValueError(msg)
        user_part = value.split("://", 1)[1].split("@", 1)
        if len(user_part) == 2 and ":" in user_part[0]:
            msg = "must not hold the password: put it in store.password_file"
            raise ValueError(msg)
        return value

    @field_validator("instance_id")
    @classmethod
    def _expand_hostname(cls, value: str) -> str:
        return value.replace("{hostname}", socket.gethostname())

    @model_validator(mode="after")
    def _password_from_file(self) -> StoreConfig:
        if self.password_file is not None:
            self.password = _read_secret_file(self.password_file, "store.password_file")
        return self


class DedupeConfig(_Section):
    window_seconds: float = Field(60.0, ge=0)


_HH_MM = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


class ShiftConfig(_Section):
    """A scheduled window (see InferenceConfig); times are site-local HH:MM."""

    name: str = Field(min_length=1)
    start: time
    end: time  # not after start: the window crosses midnight
    margin_before: float = Field(60.0, ge=0)  # minutes
    margin_after: float = Field(60.0, ge=0)  # minutes
    terminals: list[str] | None = None  # null: every terminal
    # Values of the directory column inference.group_column whose people it applies to
    # (null: everyone).
    groups: list[str] | None = None
    between: Between = Between.BREAKS

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hh_mm(cls, value: object) -> object:
        # Unquoted, YAML reads 22:00 as the number 1320 (base 60): ask for the quotes.
        if not isinstance(value, str) or not _HH_MM.fullmatch(value):
            msg = f"must be a quoted site-local time 'HH:MM' (e.g. '22:00'), not {value!r}"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _at_most_a_day(self) -> ShiftConfig:
        if self.start == self.end:
            msg = "start and end must differ"
            raise ValueError(msg)
        start = datetime.combine(date.min, self.start)
        end = datetime.combine(date.min, self.end)
        length = (end - start) % timedelta(days=1)
        if length + timedelta(minutes=self.margin_before + self.margin_after) > timedelta(days=1):
            msg = "the window with its margins must be at most 24 hours"
            raise ValueError(msg)
        return self

    def window(self) -> ShiftWindow:
        return ShiftWindow(
            name=self.name,
            start=self.start,
            end=self.end,
            margin_before=timedelta(minutes=self.margin_before),
            margin_after=timedelta(minutes=self.margin_after),
            terminals=None if self.terminals is None else frozenset(self.terminals),
            between=self.between,
            groups=None if self.groups is None else frozenset(self.groups),
        )


class InferenceConfig(_Section):
    """The direction of a swipe without an action (bridge.store.inference): by shift, never by
    calendar day. See config.yaml."""

    max_shift_hours: float = Field(16.0, gt=0, le=48)
    shifts: list[ShiftConfig] = Field(default_factory=list)
    # The directory column naming each person's schedule (e.g. `shift`), for windows with
    # `groups`; null: windows apply by terminal only.
    group_column: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _groups_need_a_column(self) -> InferenceConfig:
        if self.group_column is None and any(s.groups is not None for s in self.shifts):
            msg = "shifts with groups need group_column (the directory column naming them)"
            raise ValueError(msg)
        return self

    @field_validator("shifts")
    @classmethod
    def _unique_names(cls, value: list[ShiftConfig]) -> list[ShiftConfig]:
        names = [shift.name for shift in value]
        if len(set(names)) != len(names):
            msg = "shift names must be unique"
            raise ValueError(msg)
        return value

    def rules(self, *, tz: ZoneInfo, window_seconds: float) -> InferenceRules:
        return InferenceRules(
            tz=tz,
            window_seconds=window_seconds,
            max_shift=timedelta(hours=self.max_shift_hours),
            shifts=tuple(shift.window() for shift in self.shifts),
        )


class DispatchConfig(_Section):
    """How deliveries leave the queue (bridge.dispatch). See config.yaml."""

    # A new punch waits this long before it may be sent, so that punches arriving nearly at
    # once from several terminals are sorted by event time before the first one goes out.
    settle_seconds: float = Field(2.0, ge=0, le=60)


class RetryConfig(_Section):
    initial_seconds: float = Field(1.0, gt=0)
    max_seconds: float = Field(300.0, gt=0)
    max_age_days: float = Field(14.0, gt=0)
    pause_probe_seconds: float = Field(60.0, gt=0)
    # A failed answer retries that person's delivery alone; the whole sink goes to one probe at
    # a time only when the vendor is unreachable or at least outage_failure_ratio of its last
    # outage_window answers failed (1 and 1.0: every failure, as before).
    outage_window: int = Field(20, ge=1, le=10_000)
    outage_failure_ratio: float = Field(0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.max_seconds < self.initial_seconds:
            msg = "max_seconds must be >= initial_seconds"
            raise ValueError(msg)
        return self


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
