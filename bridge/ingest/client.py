"""The broker connection: persistent session, manual acknowledgement, TLS, last will.

Only aiomqtt's public API here; what needs its internals (manual ack) is in bridge.ingest.mqtt.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import structlog

from bridge.config import ConfigError, MqttConfig, MqttTls
from bridge.ingest.mqtt import connect_properties, enable_manual_ack

log = structlog.get_logger("bridge.ingest")

ONLINE = b"online"
OFFLINE = b"offline"

# Send small packets at once. paho leaves Nagle's algorithm on, so a feedback PUBLISH that
# follows a PUBACK waits for the broker's delayed TCP ack (about 40 ms): every kiosk reply
# would come 40 ms late, and under load the replies queue up behind each other. aiomqtt sets
# these on the socket as soon as it is connected.
SOCKET_OPTIONS = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


class _KeyIsEncryptedError(Exception):
    """OpenSSL asked for the key's passphrase."""


def _no_passphrase() -> str:
    # Without a password callback OpenSSL prompts `Enter PEM pass phrase:` on the terminal,
    # which would hang a daemon (or read whatever stdin holds). Refuse instead.
    raise _KeyIsEncryptedError


def _pem_problem(key: str, path: Path, err: OSError) -> ConfigError:
    if isinstance(err, ssl.SSLError):
        return ConfigError(f"mqtt.tls.{key}: {path} is not a readable PEM file (damaged?)")
    return ConfigError(f"mqtt.tls.{key}: cannot read {path}: {err.strerror or err}")


def tls_context(tls: MqttTls) -> ssl.SSLContext:
    """The TLS context for the broker, loaded without ever prompting. A file that cannot be
    used raises ConfigError naming its key (`mqtt.tls.key_file: ... is encrypted`); `run` and
    `check-config` call this before starting anything."""
    try:
        context = ssl.create_default_context(
            cafile=str(tls.ca_file) if tls.ca_file is not None else None
        )
    except OSError as err:  # ssl.SSLError is an OSError
        if tls.ca_file is None:  # the system's CAs load without error
            raise
        raise _pem_problem("ca_file", tls.ca_file, err) from None
    if tls.cert_file is not None and tls.key_file is not None:
        _load_client_certificate(context, tls.cert_file, tls.key_file)
    if tls.insecure:
        context.check_hostname = False
    return context


def _load_client_certificate(context: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
    try:  # the certificate alone first, so a damaged one is not blamed on the key
        ssl.create_default_context(cafile=str(cert_file))
    except OSError as err:
        raise _pem_problem("cert_file", cert_file, err) from None
    try:
        context.load_cert_chain(str(cert_file), str(key_file), password=_no_passphrase)
    except _KeyIsEncryptedError:
        msg = (
            f"mqtt.tls.key_file: {key_file} is encrypted with a passphrase, which the bridge"
            " does not ask for: give it the key unencrypted (openssl pkey -in KEY -out NEW),"
            " readable by its user only"
        )
        raise ConfigError(msg) from None
    except ssl.SSLError as err:
        if "KEY_VALUES_MISMATCH" in str(err) or "values mismatch" in str(err):
            msg = f"mqtt.tls.key_file: {key_file} is not the key of cert_file {cert_file}"
            raise ConfigError(msg) from None
        raise _pem_problem("key_file", key_file, err) from None
    except OSError as err:
        raise _pem_problem("key_file", key_file, err) from None


def new_client(config: MqttConfig, *, receive_maximum: int = 1000) -> aiomqtt.Client:
    """A client with a persistent session, manual acknowledgement and no Nagle delay.

    MQTT 3.1.1: clean_session false (the broker's own expiry, if any, applies). MQTT 5:
    clean_start false and the configured session expiry, and `receive_maximum` (or
    mqtt.receive_maximum) unacknowledged messages at once; the bridge acknowledges a message
    only after storing it, so the rest waits at the broker."""
    session: dict[str, Any] = {"clean_session": False}
    if config.protocol == "5":
        properties = connect_properties(
            session_expiry_seconds=config.session_expiry_seconds or 0,
            receive_maximum=min(config.receive_maximum or receive_maximum, 65535),
        )
        session = {
            "protocol": aiomqtt.ProtocolVersion.V5,
            "clean_session": None,
            "clean_start": False,
            "properties": properties,
        }
    client = aiomqtt.Client(
        hostname=config.host,
        port=config.port,
        identifier=config.client_id,
        **session,
        keepalive=config.keepalive,
        username=config.username,
        password=config.password.get_secret_value() if config.password else None,
        tls_context=tls_context(config.tls) if config.tls is not None else None,
        # The broker tells subscribers (kiosks, dashboards) when the bridge drops off.
        will=aiomqtt.Will(config.status_topic, OFFLINE, qos=1, retain=True),
        socket_options=SOCKET_OPTIONS,
    )
    enable_manual_ack(client)
    return client


DISCONNECT_TIMEOUT_SECONDS = 3.0


@contextlib.asynccontextmanager
async def connected(
    config: MqttConfig, *, receive_maximum: int = 1000
) -> AsyncIterator[aiomqtt.Client]:
    """`async with new_client(config)`, except that leaving it never hangs: aiomqtt 2.5 waits
    without a time limit for paho to report the disconnection, and on a clean stop that report
    can fail to come, which would keep the bridge from ever exiting."""
    client = new_client(config, receive_maximum=receive_maximum)
    await client.__aenter__()
    try:
        yield client
    except BaseException as exc:
        await _leave(client, exc)
        raise
    await _leave(client, None)


async def _leave(client: aiomqtt.Client, exc: BaseException | None) -> None:
    try:
        await asyncio.wait_for(
            client.__aexit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None),
            DISCONNECT_TIMEOUT_SECONDS,
        )
    except TimeoutError:
        log.warning("mqtt.disconnect_timeout", seconds=DISCONNECT_TIMEOUT_SECONDS)
    except aiomqtt.MqttError:
        pass  # already gone: nothing left to close


def raise_lost_cancellation() -> None:
    """Call after awaiting one of aiomqtt's calls. On Python 3.11, asyncio.wait_for (inside
    them) loses a cancellation that arrives just as the awaited reply does (CPython gh-86296,
    fixed in 3.12), and the caller would carry on as if never asked to stop. A task still
    running while asked to cancel can only have lost it: raise it again."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
