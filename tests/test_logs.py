"""Logging: JSON lines, bound context, redaction of secret keys and secret values, stdlib too."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from bridge.ops.logs import configure_logging, get_logger, register_secret

SECRET = "hunter2-Pa55/word"
LATER_SECRET = "rotated-K3y-after-reload"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    # configure_logging changes process-wide state; put it back for the other test modules.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def out() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", secrets=[SECRET], stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line must be one JSON object."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def boom(api_key: str) -> None:
    password = api_key  # a local holding the secret: show_locals=False must keep it out
    msg = f"login refused for key {password}"
    raise RuntimeError(msg)


def test_json_lines_with_ts_level_event(out: io.StringIO) -> None:
    log = get_logger("bridge.test")
    log.info("mqtt.connected", host="broker", port=1883)
    log.debug("not.shown")
    [line] = lines(out)
    assert line["event"] == "mqtt.connected"
    assert line["level"] == "info"
    assert line["logger"] == "bridge.test"
    assert (line["host"], line["port"]) == ("broker", 1883)
    ts = datetime.fromisoformat(line["ts"])
    assert ts.utcoffset() is not None
    assert ts.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert abs((datetime.now(UTC) - ts).total_seconds()) < 60


def test_debug_level_shows_debug() -> None:
    stream = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=stream)
    get_logger("x").debug("queue.polled")
    assert [line["event"] for line in lines(stream)] == ["queue.polled"]


def test_bound_contextvars_appear(out: io.StringIO) -> None:
    log = get_logger("bridge.dispatch")
    with structlog.contextvars.bound_contextvars(sink="go2clock", attempt=2):
        log.info("delivery.sent")
    log.info("dispatch.idle")
    first, second = lines(out)
    assert (first["sink"], first["attempt"]) == ("go2clock", 2)
    assert "sink" not in second


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "passwd",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "api_key",
        "apikey",
        "ApiKey",
        "authorization",
        "Authorization",
        "session_key",
    ],
)
def test_secret_named_keys_are_masked(out: io.StringIO, key: str) -> None:
    get_logger("t").info(
        "http.request", **{key: "plain-value-9"}, key="evt-1", event_key="gate/1", badge="04A1"
    )
    [line] = lines(out)
    assert line[key] == "***"
    assert (line["key"], line["event_key"], line["badge"]) == ("evt-1", "gate/1", "04A1")
    assert "plain-value-9" not in out.getvalue()


def test_nested_secret_keys_are_masked(out: io.StringIO) -> None:
    headers = {"Authorization": "Bearer plain-value-9", "Accept": "application/json"}
    get_logger("t").info("http.request", headers=headers, creds=[{"token": "plain-value-9"}])
    [line] = lines(out)
    assert line["headers"] == {"Authorization": "***", "Accept": "application/json"}
    assert "plain-value-9" not in out.getvalue()


def test_registered_secret_inside_values_is_replaced(out: io.StringIO) -> None:
    log = get_logger("t")
    log.info(f"event with {SECRET} in its name", note=f"url=https://u:{SECRET}@h", n=[SECRET])  # noqa: G004 - the secret in the event name, on purpose
    log.info("obj", thing=ValueError(SECRET), raw=SECRET.encode())
    text = out.getvalue()
    assert SECRET not in text
    assert lines(out)[0]["note"] == "url=https://u:***@h"


def test_secret_registered_later_is_replaced(out: io.StringIO) -> None:
    register_secret(LATER_SECRET)
    register_secret("")  # ignored, not "mask everything"
    get_logger("t").warning("credentials.reloaded", note=f"new {LATER_SECRET}")
    [line] = lines(out)
    assert line["note"] == "new ***"
    assert line["event"] == "credentials.reloaded"


def test_repr_escaped_secret_is_replaced(out: io.StringIO) -> None:
    odd = "it's\\a\"secret"
    register_secret(odd)
    get_logger("t").info("x", note=repr(odd), other=json.dumps(odd))
    assert "secret" not in out.getvalue()


def test_exception_text_never_shows_the_secret(out: io.StringIO) -> None:
    log = get_logger("bridge.sink")
    try:
        try:
            boom(SECRET)
        except RuntimeError as err:
            err.add_note(f"note with {SECRET}")
            msg = f"wrapped: {err}"
            raise ConnectionError(msg) from err
    except ConnectionError:
        log.exception("delivery.failed")
    assert SECRET not in out.getvalue()
    [line] = lines(out)
    assert line["level"] == "error"
    chain = line["exception"]
    assert [e["exc_type"] for e in chain] == ["ConnectionError", "RuntimeError"]
    assert chain[1]["exc_value"] == "login refused for key ***"
    assert all("locals" not in frame for e in chain for frame in e["frames"])


def test_console_exception_is_plain_text_without_the_secret() -> None:
    stream = io.StringIO()
    configure_logging(level="info", fmt="console", secrets=[SECRET], stream=stream)
    try:
        boom(SECRET)
    except RuntimeError:
        get_logger("t").exception("delivery.failed", api_key="plain-value-9")
    text = stream.getvalue()
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: login refused for key ***" in text
    assert SECRET not in text
    assert "plain-value-9" not in text
    assert "\x1b[" not in text  # no colours when not a terminal


def test_stdlib_loggers_are_json_at_warning_and_up(out: io.StringIO) -> None:
    logging.getLogger("aiomqtt").info("chatty %s", "detail")
    logging.getLogger("aiomqtt").warning("connection lost to %s", "broker")
    try:
        boom(SECRET)
    except RuntimeError:
        logging.getLogger("aiohttp.client").exception("request failed for %s", SECRET)
    assert SECRET not in out.getvalue()
    warning, error = lines(out)
    assert (warning["logger"], warning["level"]) == ("aiomqtt", "warning")
    assert warning["event"] == "connection lost to broker"
    assert "ts" in warning
    assert error["event"] == "request failed for ***"
    assert error["exception"][0]["exc_value"] == "login refused for key ***"


def test_stdlib_sees_bound_context(out: io.StringIO) -> None:
    with structlog.contextvars.bound_contextvars(sink="go2clock"):
        logging.getLogger("aiohttp.client").error("timeout")
    assert lines(out)[0]["sink"] == "go2clock"


def test_reconfiguring_replaces_the_setup() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(level="info", fmt="json", stream=first)
    log = get_logger("t")  # used before the second call: must still follow it
    log.info("first.call")
    configure_logging(level="info", fmt="json", stream=second)
    log.info("a.b")
    logging.getLogger("paho").error("c")
    assert [line["event"] for line in lines(first)] == ["first.call"]
    assert [line["event"] for line in lines(second)] == ["a.b", "c"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "is_json"), [(io.StringIO(), True), (_Terminal(), False)])
def test_auto_format_follows_the_terminal(stream: io.StringIO, is_json: bool) -> None:
    configure_logging(level="info", fmt="auto", stream=stream)
    get_logger("t").info("x.y")
    text = stream.getvalue()
    assert text.startswith("{") is is_json


@pytest.mark.parametrize(("level", "fmt"), [("loud", "json"), ("info", "xml")])
def test_bad_arguments(level: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="unknown"):
        configure_logging(level=level, fmt=fmt, stream=io.StringIO())
