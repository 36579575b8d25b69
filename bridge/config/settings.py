"""The whole configuration: config.yaml, overridden by CLOCKIN_<SECTION>__<KEY>."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    Field,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from bridge.config.base import ConfigError, without_secrets
from bridge.config.directory import DirectoryConfig
from bridge.config.paths import layout_for
from bridge.config.reconcile import ReconcileConfig
from bridge.config.sections import (
    DedupeConfig,
    DispatchConfig,
    HttpConfig,
    InferenceConfig,
    LogConfig,
    MqttConfig,
    RetryConfig,
    SiteConfig,
    StoreConfig,
)
from bridge.config.sinks import SinksConfig


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLOCKIN_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    site: SiteConfig = Field(default_factory=SiteConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    directory: DirectoryConfig = Field(default_factory=DirectoryConfig)
    dedupe: DedupeConfig = Field(default_factory=DedupeConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    dispatch: DispatchConfig = Field(default_factory=DispatchConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    sinks: SinksConfig = Field(default_factory=SinksConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],  # noqa: ARG003 - pydantic-settings' signature
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - ignored: no .env
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - *_file keys instead
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
        mqtt, q2 = self.mqtt.password, self.reconcile.q2.developer_token
        values = [] if mqtt is None else [mqtt.get_secret_value()]
        for section in (self.sinks.go2clock, self.sinks.mctime, self.sinks.timetrack):
            values += section.secrets()
        if q2 is not None:
            values.append(q2.get_secret_value())
        if self.store.password is not None:
            values.append(self.store.password.get_secret_value())
        return values + self.directory.secret_values()

    @property
    def go2clock_tz(self) -> ZoneInfo:
        return ZoneInfo(self.sinks.go2clock.timezone or self.site.timezone)

    @property
    def q2_tz(self) -> ZoneInfo:
        return ZoneInfo(self.reconcile.q2.timezone or self.site.timezone)


ENV_PREFIX = "CLOCKIN_"
# CLOCKIN_* variables that are not settings: the config file's path, the tests' cache folder.
NOT_SETTINGS = frozenset({"CLOCKIN_CONFIG", "CLOCKIN_TEST_CACHE"})


def _settings_environment() -> dict[tuple[str, ...], str]:
    """The CLOCKIN_* variables that set a key, by the key's path (mqtt, port) -> the variable's
    name; ConfigError for one whose section does not exist (a typo would otherwise be ignored
    silently and the default used)."""
    found: dict[tuple[str, ...], str] = {}
    for name in os.environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NOT_SETTINGS:
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        if path[0] not in Settings.model_fields:
            sections = ", ".join(Settings.model_fields)
            msg = (
                f"environment variable {name}: there is no config section {path[0]!r}"
                f" (sections: {sections}; CLOCKIN_<SECTION>__<KEY>)"
            )
            raise ConfigError(msg)
        found[path] = name
    return found


def _format_errors(err: ValidationError, environment: dict[tuple[str, ...], str]) -> str:
    """pydantic's problems, one per key, each saying where the value came from when that was
    an environment variable rather than the file."""
    lines = []
    for problem in err.errors(include_url=False, include_input=False):
        loc = tuple(str(part) for part in problem["loc"])
        where = ".".join(loc) or "(top level)"
        source = next(
            (name for path, name in environment.items() if loc[: len(path)] == path), None
        )
        if source is not None:
            where += f" (from the environment variable {source})"
        lines.append(f"{where}: {problem['msg']}")
    return "; ".join(lines)


# A quoted piece of a PyYAML problem: the text it choked on (`found undefined alias 'x'`).
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'" + r'|"(?:[^"\\]|\\.)*"')


def _without_values(problem: str) -> str:
    """PyYAML's problem without what it quotes from the file, which may be a secret (`*abc`
    is read as an alias, `!abc` as a tag): kept are a single character or escape (`found
    character '@'`) and its own token names (`'<stream end>'`)."""

    def keep_syntax(match: re.Match[str]) -> str:
        inner = match.group(0)[1:-1]
        one_character = len(inner) == 1 or (len(inner) == 2 and inner[0] == "\\")
        if one_character or (inner.startswith("<") and inner.endswith(">")):
            return match.group(0)
        return ""

    return " ".join(_QUOTED.sub(keep_syntax, problem).split())


def _yaml_problem(path: Path, err: yaml.YAMLError) -> str:
    # str(err) quotes the offending line, which may hold a secret: keep only the kind of
    # problem, without any value it quotes, and the position.
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        problem = _without_values(err.problem or "") or "a syntax error"
        if problem == "second occurrence":  # of an anchor: the name is in err.context
            problem = "an anchor defined twice"
        return f"config file {path} is not valid YAML: {problem} ({where})"
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


def load_settings(path: Path | None, *, secrets: bool = True) -> Settings:
    """Read the YAML file (if any) and the environment; raise ConfigError on any problem.

    `secrets=False` for a command that never talks to a vendor: credential files are not
    read (nor required), so it works where they are not readable."""
    data = {} if path is None else _read_yaml(path)
    settings_env = _settings_environment()
    try:
        # The file's values are init kwargs; pydantic-settings deep-merges the environment over
        # them, so CLOCKIN_SINKS__GO2CLOCK__API_KEY keeps the file's other go2clock keys.
        # Relative paths, from either, resolve against the file's folder (bridge.config.paths).
        secrecy = contextlib.nullcontext() if secrets else without_secrets()
        with layout_for(path), secrecy:
            return Settings(**data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, settings_env)) from None
    except SettingsError as err:  # an environment value that is not valid JSON for its field
        msg = f"CLOCKIN_* environment: {err}"
        raise ConfigError(msg) from None
