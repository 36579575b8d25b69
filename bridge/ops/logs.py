"""The only place logging is configured: structlog JSON lines (or console text) on stdout.

Our own loggers are native structlog loggers; stdlib loggers (aiomqtt, paho, aiohttp) go through
a ProcessorFormatter with the same processors, so every line has the same shape and the same
redaction. Redaction runs after exceptions are rendered, so traceback text is scrubbed too.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from bridge.ops.redaction import mask_secrets

MASK = "***"

# Key names whose values are never logged: password, passwd, secret, token, api_key, apikey,
# authorization, api/private/session/access/signing keys; not event_key, which names an event.
_SECRET_KEY = re.compile(
    r"passw(or)?d|secret|token|authorization|(api|private|session|access|signing)_?key",
    re.IGNORECASE,
)

_secrets: set[str] = set()
_handler: logging.Handler | None = None  # ours on the root logger, replaced on reconfigure


def register_secret(value: str) -> None:
    """Mask `value` wherever it appears in a logged string (e.g. after a credentials reload)."""
    if value:  # masking "" would put *** between every character
        _secrets.add(value)


def _scrub(text: str) -> str:
    # Raw, escaped (repr, JSON), URL-encoded, in any case, or cut short: bridge.ops.redaction.
    return mask_secrets(text, _secrets, mask=MASK)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub(value)
    if isinstance(value, dict):
        return {k: MASK if _is_secret_key(k) else _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    # Renderers would repr() anything else; do it here so the text can be scrubbed.
    return _scrub(repr(value))


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _SECRET_KEY.search(key) is not None


def redact(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Mask secret-named keys and every registered secret value, at any depth."""
    return cast("EventDict", _redact_value(event_dict))


class _NamedWriteLogger(structlog.WriteLogger):
    """A WriteLogger that knows its name, so our lines carry `logger` like stdlib ones do."""

    def __init__(self, file: TextIO, name: str | None) -> None:
        super().__init__(file)
        self.name = name


class _LoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> structlog.WriteLogger:
        return _NamedWriteLogger(self._file, args[0] if args else None)


def _add_logger_name(logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    name = getattr(logger, "name", None)
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


def _lead_keys(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    # ts, level, logger, event first: easier to read by eye and to grep.
    lead = {k: event_dict.pop(k) for k in ("ts", "level", "logger", "event") if k in event_dict}
    return {**lead, **event_dict}


def _shared() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.StackInfoRenderer(),
    ]


def _rendering(fmt: str, *, colors: bool) -> list[Processor]:
    if fmt == "json":
        transformer = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        return [
            structlog.processors.ExceptionRenderer(transformer),
            redact,
            _lead_keys,
            structlog.processors.JSONRenderer(),
        ]
    # Console: plain-text traceback rendered first so redaction can scrub it.
    return [
        structlog.processors.format_exc_info,
        redact,
        structlog.dev.ConsoleRenderer(
            colors=colors, exception_formatter=structlog.dev.plain_traceback
        ),
    ]


def _route_stdlib(stream: TextIO, fmt: str, level: int, *, colors: bool) -> None:
    global _handler  # noqa: PLW0603 - one handler of ours per process, swapped on reconfigure
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *_shared()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_rendering(fmt, colors=colors),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)  # only ours: pytest's capture handlers stay
    root.addHandler(handler)
    # Libraries are chatty at INFO/DEBUG; only their warnings and errors matter here.
    root.setLevel(max(logging.WARNING, level))
    _handler = handler


def configure_logging(
    *, level: str, fmt: str, secrets: Iterable[str] = (), stream: TextIO | None = None
) -> None:
    """Set up structlog and stdlib logging; safe to call again (it replaces the setup).

    `fmt` is json, console or auto (console on a terminal). `secrets` replaces the set of
    registered secret values.
    """
    out = sys.stdout if stream is None else stream
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        msg = f"unknown log level {level!r}"
        raise ValueError(msg)
    if fmt not in {"json", "console", "auto"}:
        msg = f"unknown log format {fmt!r}"
        raise ValueError(msg)
    tty = out.isatty()
    if fmt == "auto":
        fmt = "console" if tty else "json"
    _secrets.clear()
    for secret in secrets:
        register_secret(secret)
    structlog.configure(
        processors=[_add_logger_name, *_shared(), *_rendering(fmt, colors=tty)],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_LoggerFactory(out),
        # Not cached: module-level loggers made before configure_logging (or before a test
        # reconfigures) must pick up the current setup.
        cache_logger_on_first_use=False,
    )
    _route_stdlib(out, fmt, numeric, colors=tty)


def set_level(level: str) -> None:
    """Change the level of a running setup (SIGHUP), keeping everything else."""
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        msg = f"unknown log level {level!r}"
        raise ValueError(msg)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(numeric))
    logging.getLogger().setLevel(max(logging.WARNING, numeric))


def get_logger(name: str) -> FilteringBoundLogger:
    """A structlog logger whose lines carry `logger=name`, like the stdlib ones."""
    # The name goes to the logger factory: binding it here would freeze today's configuration.
    return cast("FilteringBoundLogger", structlog.get_logger(name))
