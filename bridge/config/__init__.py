"""Settings: config.yaml, overridden by CLOCKIN_<SECTION>__<KEY> environment variables.

Secrets are SecretStr, so they print as '**********' in reprs, logs and tracebacks. Every secret
can also come from a `<name>_file` key (a systemd credential, a Docker secret). One module per
group of sections; everything is importable from here.
"""

from bridge.config.base import ConfigError
from bridge.config.directory import (
    DirectoryConfig,
    DirectorySources,
    Go2ClockSource,
    McTimeSource,
    Q2Source,
    TimeTrackSource,
)
from bridge.config.reconcile import ReconcileConfig, ReconcileQ2Config
from bridge.config.sections import (
    DedupeConfig,
    DispatchConfig,
    HttpConfig,
    InferenceConfig,
    LogConfig,
    MqttConfig,
    MqttTls,
    RetryConfig,
    SiteConfig,
    StoreConfig,
    Subscription,
)
from bridge.config.settings import Settings, load_settings
from bridge.config.sinks import (
    Go2ClockConfig,
    McTimeConfig,
    SinksConfig,
    TimeTrackConfig,
    TimeTrackFields,
)

__all__ = [
    "ConfigError",
    "DedupeConfig",
    "DirectoryConfig",
    "DirectorySources",
    "DispatchConfig",
    "Go2ClockConfig",
    "Go2ClockSource",
    "HttpConfig",
    "InferenceConfig",
    "LogConfig",
    "McTimeConfig",
    "McTimeSource",
    "MqttConfig",
    "MqttTls",
    "Q2Source",
    "ReconcileConfig",
    "ReconcileQ2Config",
    "RetryConfig",
    "Settings",
    "SinksConfig",
    "SiteConfig",
    "StoreConfig",
    "Subscription",
    "TimeTrackConfig",
    "TimeTrackFields",
    "TimeTrackSource",
    "load_settings",
]
