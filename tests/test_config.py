"""Settings: defaults, the YAML file, env overrides, *_file secrets, and error messages."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from bridge.config import (
    ConfigError,
    DedupeConfig,
    DirectoryConfig,
    Go2ClockConfig,
    HttpConfig,
    LogConfig,
    McTimeConfig,
    MqttConfig,
    RetryConfig,
    Settings,
    SiteConfig,
    StoreConfig,
    TimeTrackConfig,
    TimeTrackFields,
    load_settings,
)
from bridge.events import Action
from tests.strategies import EXAMPLES

REPO = Path(__file__).resolve().parents[1]
SYSTEMD_FOLDERS = ("STATE_DIRECTORY", "CONFIGURATION_DIRECTORY", "CREDENTIALS_DIRECTORY")
SECRET = "s3cr3t-Value-42"
SECTIONS: dict[str, type[BaseModel]] = {
    "site": SiteConfig,
    "mqtt": MqttConfig,
    "store": StoreConfig,
    "directory": DirectoryConfig,
    "dedupe": DedupeConfig,
    "retry": RetryConfig,
    "log": LogConfig,
    "http": HttpConfig,
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    # A developer's own CLOCKIN_* variables must not leak into these tests.
    for name in list(os.environ):
        if name.upper().startswith("CLOCKIN_") or name in SYSTEMD_FOLDERS:
            monkeypatch.delenv(name)
    return monkeypatch


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_dict(tmp_path: Path, data: Any) -> Settings:
    return load_settings(write(tmp_path, yaml.safe_dump(data)))


def test_defaults_without_a_file(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.chdir(tmp_path)
    s = load_settings(None)
    assert s.site.timezone == "UTC"
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.client_id) == ("127.0.0.1", 1883, "clockin-bridge")
    assert s.mqtt.password is None
    assert [sub.topic for sub in s.mqtt.subscriptions] == ["clockin/+/events"]
    assert s.store.path == tmp_path / "var" / "clockin-bridge.db"
    assert s.directory.path is None
    assert s.sinks.go2clock.enabled is False
    assert s.sinks.go2clock.checktypes[Action.BREAK_END] == 3
    assert (s.log.level, s.log.format) == ("info", "auto")


def test_empty_file_means_defaults(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.chdir(tmp_path)  # without a file, relative paths follow the working directory
    assert load_settings(write(tmp_path, "")) == load_settings(None)


def test_yaml_values_are_used(tmp_path: Path) -> None:
    s = load_dict(
        tmp_path,
        {
            "site": {"timezone": "Europe/Berlin"},
            "mqtt": {"host": "broker.lan", "port": 8883, "subscriptions": [{"topic": "a/#"}]},
            "sinks": {"go2clock": {"api_key": SECRET, "base_url": "http://x:1/", "concurrency": 2}},
            "log": {"level": "DEBUG"},
        },
    )
    assert s.site.tz.key == "Europe/Berlin"
    assert (s.mqtt.host, s.mqtt.port) == ("broker.lan", 8883)
    assert s.mqtt.subscriptions[0].topic == "a/#"
    g = s.sinks.go2clock
    assert g.enabled is True
    assert g.api_key is not None
    assert g.api_key.get_secret_value() == SECRET
    assert g.base_url == "http://x:1"
    assert s.go2clock_tz.key == "Europe/Berlin"
    assert s.log.level == "debug"
    assert SECRET not in repr(s)


def test_env_key_deep_merges_with_the_file(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    # The file has go2clock enabled without a key; the key comes from the environment alone.
    path = write(
        tmp_path,
        "mqtt: {port: 1884}\n"
        "sinks:\n  go2clock:\n    base_url: http://127.0.0.1:8089\n    concurrency: 7\n",
    )
    clean_env.setenv("CLOCKIN_SINKS__GO2CLOCK__API_KEY", SECRET)
    clean_env.setenv("CLOCKIN_MQTT__HOST", "broker.lan")
    s = load_settings(path)
    g = s.sinks.go2clock
    assert g.api_key is not None
    assert g.api_key.get_secret_value() == SECRET
    assert (g.base_url, g.concurrency, g.enabled) == ("http://127.0.0.1:8089", 7, True)
    assert (s.mqtt.host, s.mqtt.port) == ("broker.lan", 1884)


def test_env_wins_over_the_file(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("clockin_mqtt__port", "1999")  # any case
    assert load_settings(write(tmp_path, "mqtt: {port: 1884}\n")).mqtt.port == 1999


def test_env_value_that_is_not_json_is_a_config_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLOCKIN_MQTT__SUBSCRIPTIONS", "not json")
    with pytest.raises(ConfigError, match="mqtt"):
        load_settings(None)


def test_secret_files_are_read_and_stripped(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    (tmp_path / "go2clock-key").write_text(SECRET + "\n", encoding="utf-8")
    (tmp_path / "mqtt-password").write_text("pw-" + SECRET, encoding="utf-8")
    clean_env.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    # Both ways in: ${CREDENTIALS_DIRECTORY} in the file, and a *_FILE env var.
    path = write(
        tmp_path,
        "sinks:\n  go2clock:\n    api_key_file: ${CREDENTIALS_DIRECTORY}/go2clock-key\n",
    )
    clean_env.setenv("CLOCKIN_MQTT__PASSWORD_FILE", str(tmp_path / "mqtt-password"))
    s = load_settings(path)
    assert s.sinks.go2clock.api_key is not None
    assert s.sinks.go2clock.api_key.get_secret_value() == SECRET
    assert s.mqtt.password is not None
    assert s.mqtt.password.get_secret_value() == "pw-" + SECRET


def test_missing_secret_file_names_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    data = {"sinks": {"go2clock": {"api_key_file": str(missing)}}}
    with pytest.raises(ConfigError, match="api_key_file") as info:
        load_dict(tmp_path, data)
    assert str(missing) in str(info.value)


def test_unset_credentials_directory_is_an_error(tmp_path: Path) -> None:
    data = {"mqtt": {"password_file": "${CREDENTIALS_DIRECTORY}/mqtt-password"}}
    with pytest.raises(ConfigError, match=r"mqtt\.password_file"):
        load_dict(tmp_path, data)


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"site": {"timezone": "Mars/Olympus"}}, "site.timezone"),
        ({"site": {"timezone": "../etc/passwd"}}, "site.timezone"),
        ({"mqtt": {"port": 70000}}, "mqtt.port"),
        ({"mqtt": {"port": 0}}, "mqtt.port"),
        ({"mqtt": {"client_id": "x" * 24}}, "mqtt.client_id"),
        ({"mqtt": {"subscriptions": []}}, "mqtt.subscriptions"),
        ({"mqtt": {"subscriptions": [{"topic": "a", "format": "xml"}]}}, "format"),
        ({"sinks": {"go2clock": {"enabled": True}}}, "sinks.go2clock"),
        ({"sinks": {"go2clock": {}}}, "api_key"),
        ({"sinks": {"go2clock": {"api_key": "k", "base_url": "ftp://x"}}}, "base_url"),
        ({"sinks": {"go2clock": {"api_key": "k", "timezone": "Nowhere"}}}, "timezone"),
        ({"sinks": {"go2clock": {"api_key": "k", "checktypes": {"in": 0}}}}, "checktypes"),
        ({"retry": {"initial_seconds": 10, "max_seconds": 5}}, "retry"),
        ({"log": {"level": "loud"}}, "log.level"),
        ({"log": {"format": "xml"}}, "log.format"),
        ({"mqqt": {"host": "x"}}, "mqqt"),
        ({"mqtt": {"hots": "x"}}, "mqtt.hots"),
        ({"sinks": {"go2clok": {}}}, "sinks.go2clok"),
        ({1: {}}, "1"),
    ],
)
def test_every_error_names_its_key(tmp_path: Path, data: dict[Any, Any], names: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_dict(tmp_path, data)
    assert names in str(info.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_yaml_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path, text))


def test_invalid_yaml_gives_the_position(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid YAML.*line 2"):
        load_settings(write(tmp_path, "mqtt:\n  host: a: b\n"))


def test_impossible_date_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(write(tmp_path, "site:\n  timezone: 2024-02-30\n"))


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="cannot read config file") as info:
        load_settings(missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        # The offending line holds the secret: PyYAML would quote it in its message.
        f'sinks:\n  go2clock:\n    api_key: "{SECRET}\n',
        f"sinks:\n  go2clock:\n    api_key: {SECRET}: x\n",
        f"mqtt:\n  password: @{SECRET}\n",
        # Valid YAML, but the secret sits next to invalid values or has the wrong type.
        (
            f"mqtt: {{port: 0, password: {SECRET}}}\n"
            f"sinks: {{go2clock: {{api_key: {SECRET}, x: 1}}}}\n"
        ),
        f"sinks: {{go2clock: {{api_key: [{SECRET}]}}}}\n",
        f"mqtt: {{password: {{nested: {SECRET}}}}}\n",
    ],
)
def test_config_error_never_holds_the_secret(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


def test_env_secret_not_in_error(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLOCKIN_SINKS__GO2CLOCK__API_KEY", SECRET)
    clean_env.setenv("CLOCKIN_SINKS__GO2CLOCK__CONCURRENCY", "1000")
    with pytest.raises(ConfigError, match="concurrency") as info:
        load_settings(None)
    assert SECRET not in str(info.value)


def test_the_shipped_config_yaml_loads() -> None:
    s = load_settings(REPO / "config.yaml")
    assert (s.mqtt.host, s.mqtt.port) == ("127.0.0.1", 1883)
    assert s.store.path == REPO / "var" / "clockin-bridge.db"
    assert s.directory.path == REPO / "directory.csv"
    g = s.sinks.go2clock
    assert (g.enabled, g.base_url) == (True, "http://127.0.0.1:8089")
    assert g.api_key is not None
    assert g.api_key.get_secret_value() == "change-me"


def test_the_shipped_config_yaml_lists_every_key() -> None:
    data = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    assert set(data) == set(Settings.model_fields)
    for name, model in SECTIONS.items():
        assert set(data[name]) == set(model.model_fields), name
    sinks = {"go2clock": Go2ClockConfig, "mctime": McTimeConfig, "timetrack": TimeTrackConfig}
    assert set(data["sinks"]) == set(sinks)
    for name, model in sinks.items():
        assert set(data["sinks"][name]) == set(model.model_fields), name
    fields = data["sinks"]["timetrack"]["fields"]
    assert set(fields) == {
        field.alias or name for name, field in TimeTrackFields.model_fields.items()
    }


def test_the_shipped_directory_csv() -> None:
    with (REPO / "directory.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert all(row.keys() == {"badge", "userid", "name"} and all(row.values()) for row in rows)


# --- fuzzing: any mapping loads or raises ConfigError, and the error never shows a secret ----

SENTINEL = "zz-secret-"
_FIELDS = sorted(
    {name for model in (*SECTIONS.values(), Go2ClockConfig) for name in model.model_fields}
)
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | _text
    | st.sampled_from(["UTC", "Europe/Berlin", "http://h:1", "json", "canonical", "in", "a/#"])
)
_keys = st.sampled_from(_FIELDS) | _text | st.integers(-3, 3)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)
_section = st.dictionaries(_keys, _values, max_size=5)
_sinks = st.dictionaries(st.just("go2clock") | _text, _section | _values, max_size=2)
_config = st.dictionaries(
    st.sampled_from(sorted(Settings.model_fields)) | _text | st.integers(0, 3),
    _section | _values,
    max_size=5,
).flatmap(
    lambda top: (
        st.just(top) if "sinks" not in top else _sinks.map(lambda sinks: {**top, "sinks": sinks})
    )
)


def _plant_secrets(value: Any) -> Any:
    # Any string under a secret key gets a marker the error text must never contain.
    if isinstance(value, dict):
        return {
            k: SENTINEL + v
            if k in {"password", "api_key"} and isinstance(v, str)
            else _plant_secrets(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_plant_secrets(item) for item in value]
    return value


@settings(
    max_examples=EXAMPLES,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
    database=None,
)
@given(data=_config.map(_plant_secrets))
def test_any_mapping_loads_or_raises_config_error(tmp_path: Path, data: dict[Any, Any]) -> None:
    try:
        load_dict(tmp_path, data)
    except ConfigError as err:
        message = str(err)
    else:
        return
    assert message
    assert SENTINEL not in message


# --- where files are: relative to the config file, defaults per way of running ---------------


def test_relative_paths_follow_the_config_file_not_the_working_directory(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    for name in ("ca.crt", "client.crt", "client.key"):
        (folder / name).write_text("x")
    clean_env.chdir("/")  # as systemd starts the service
    data = {
        "store": {"path": "state/bridge.db"},
        "directory": {"path": "directory.csv"},
        "mqtt": {"tls": {"ca_file": "ca.crt", "cert_file": "client.crt", "key_file": "client.key"}},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    s = load_settings(path)
    assert s.store.path == folder / "state" / "bridge.db"
    assert s.directory.path == folder / "directory.csv"
    assert s.mqtt.tls is not None
    assert (s.mqtt.tls.ca_file, s.mqtt.tls.key_file) == (folder / "ca.crt", folder / "client.key")


def test_a_relative_path_from_the_environment_follows_the_config_file_too(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.chdir("/")
    clean_env.setenv("CLOCKIN_STORE__PATH", "other.db")
    assert load_settings(write(tmp_path, "")).store.path == tmp_path / "other.db"


def test_absolute_paths_are_taken_as_given(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "x.db"
    s = load_dict(tmp_path / "..", {"store": {"path": str(elsewhere)}})
    assert s.store.path == elsewhere


@pytest.mark.parametrize(
    ("config_dir", "environ", "state", "credentials"),
    [
        # systemd: its variables win
        (
            "/etc/clockin-bridge",
            {
                "STATE_DIRECTORY": "/var/lib/x",
                "CREDENTIALS_DIRECTORY": "/run/credentials/x.service",
            },
            "/var/lib/x",
            "/run/credentials/x.service",
        ),
        # several StateDirectory= folders: the first
        (
            "/srv/b",
            {"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"},
            "/var/lib/a",
            "/srv/b/credentials",
        ),
        # an installed bridge seen from an operator's shell, or the container
        ("/etc/clockin-bridge", {}, "/var/lib/clockin-bridge", "/etc/clockin-bridge/credentials"),
        (
            "/etc/clockin-bridge",
            {"CREDENTIALS_DIRECTORY": "/run/secrets"},
            "/var/lib/clockin-bridge",
            "/run/secrets",
        ),
        # a checkout
        (
            "/home/ana/clockin-bridge",
            {},
            "/home/ana/clockin-bridge/var",
            "/home/ana/clockin-bridge/credentials",
        ),
    ],
)
def test_state_and_credential_folders_per_way_of_running(
    config_dir: str, environ: dict[str, str], state: str, credentials: str
) -> None:
    from bridge.config.paths import Layout

    layout = Layout.of(Path(config_dir) / "config.yaml", environ)
    assert layout.config_dir == Path(config_dir)
    assert (layout.state_dir, layout.credentials_dir) == (Path(state), Path(credentials))


def test_the_database_defaults_to_the_state_directory(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    for text in ("", "store: {path: null}\n"):
        assert load_settings(write(tmp_path, text)).store.path == tmp_path / "state" / (
            "clockin-bridge.db"
        )


def test_a_credential_name_is_found_in_the_credentials_directory(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "run-credentials"
    credentials.mkdir()
    (credentials / "go2clock_api_key").write_text(SECRET + "\n")
    (credentials / "mqtt_password").write_text("pw-" + SECRET)
    clean_env.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    data = {
        "mqtt": {"password_file": "mqtt_password"},
        "sinks": {"go2clock": {"api_key_file": "go2clock_api_key"}},
    }
    s = load_dict(tmp_path, data)
    assert s.sinks.go2clock.api_key is not None
    assert s.sinks.go2clock.api_key.get_secret_value() == SECRET
    assert s.mqtt.password is not None
    assert s.mqtt.password.get_secret_value() == "pw-" + SECRET


def test_without_systemd_credentials_are_beside_the_config_file(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    # An operator's shell on an installed bridge: the files the unit's LoadCredential= reads.
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "go2clock_api_key").write_text(SECRET)
    clean_env.chdir("/")
    for name in ("go2clock_api_key", "${CREDENTIALS_DIRECTORY}/go2clock_api_key"):
        s = load_dict(tmp_path, {"sinks": {"go2clock": {"api_key_file": name}}})
        assert s.sinks.go2clock.api_key is not None
        assert s.sinks.go2clock.api_key.get_secret_value() == SECRET


@pytest.mark.parametrize("content", ["", "\n", "  \n\n"])
def test_an_empty_key_file_is_reported_as_empty(tmp_path: Path, content: str) -> None:
    key = tmp_path / "go2clock_api_key"
    key.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_dict(tmp_path, {"sinks": {"go2clock": {"api_key_file": str(key)}}})
    assert f"sinks.go2clock: Value error, api_key_file {key} is empty" in str(info.value)
    assert "required" not in str(info.value)


def test_default_config_prefers_the_environment_then_an_installed_file(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    from bridge.commands import common

    clean_env.setenv("CLOCKIN_CONFIG", str(tmp_path / "mine.yaml"))
    assert common.default_config() == tmp_path / "mine.yaml"
    clean_env.delenv("CLOCKIN_CONFIG")
    clean_env.setattr(common, "INSTALLED_CONFIG_DIR", tmp_path)
    assert common.default_config() == Path("config.yaml")  # none installed: a checkout's
    (tmp_path / "config.yaml").write_text("")
    assert common.default_config() == tmp_path / "config.yaml"


def test_credential_names_agree_across_config_unit_compose_and_readme() -> None:
    """One name per secret: <section>_<key>, the same in the unit's LoadCredential=, compose's
    secrets, the config's examples and the README."""
    import re

    unit = (REPO / "systemd" / "clockin-bridge.service").read_text()
    loaded = re.findall(
        r"^#? ?LoadCredential=(\w+):/etc/clockin-bridge/credentials/(\w+)$",
        unit,
        flags=re.MULTILINE,
    )
    assert loaded, "no LoadCredential= lines"
    assert all(name == source for name, source in loaded)
    names = {name for name, _ in loaded}
    assert names == {
        "mqtt_password",
        "go2clock_api_key",
        "mctime_api_key",
        "timetrack_api_key",
        "timetrack_api_secret",
        "q2_developer_token",
    }
    config = (REPO / "config.yaml").read_text()
    for name in names:
        assert name in config, name
    assert not re.search(r"\w+-(api-key|password|developer-token)", config + unit)
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    for secret, spec in compose["secrets"].items():
        assert secret in names
        assert spec["file"] == f"./secrets/{secret}"
    environment = compose["services"]["clockin-bridge"]["environment"]
    for value in environment.values():
        if str(value).startswith("/run/secrets/"):
            assert value.removeprefix("/run/secrets/") in compose["secrets"]
    readme = (REPO / "README.md").read_text()
    for name in ("mqtt_password", "go2clock_api_key"):
        assert f"/etc/clockin-bridge/credentials/{name}" in readme
        assert f"secrets/{name}" in readme
