"""Secrets are masked in every form they come back in (issue 11, item 4).

A vendor that quotes a key back may write it raw, JSON-escaped (`\\/`, `\\uXXXX`), URL-encoded
(quote, quote_plus, either hex case, twice), repr-escaped, in another case, or cut short. The
fakes' echo switches answer that way; what the bridge shows must hold no form of the secret
and no head of it (FRAGMENT_MIN characters) anywhere an operator or a file can see it:

- the masking function itself, for any secret and form (pure, many examples);
- every sink's Result detail, the directory sources' errors and the reconcile readers' errors,
  each against its fake over HTTP;
- a running bridge end to end: the log lines, `last_error`, the status page, `dead list` and
  `dead show`, `reconcile` (stdout and stderr), `directory sync`, and every text column of the
  SQLite file.

The oracle (`leaks`) writes the forms with the standard library, independently of
bridge.ops.redaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import io
import json
import logging
import re
import sqlite3
import string
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import pytest
import structlog
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bridge import cli
from bridge.config import Go2ClockConfig, ReconcileQ2Config
from bridge.delivery import Job, Result, Sink
from bridge.directory.sync import fetch_one
from bridge.ops.logs import configure_logging
from bridge.ops.redaction import FRAGMENT_MIN, MASK, TAIL_MIN, mask_answer, mask_secrets
from bridge.reconcile.fetch import ReadError
from bridge.reconcile.window import Window
from bridge.vendors.go2clock import readback as reconcile_go2clock
from bridge.vendors.go2clock.users import Go2ClockUsers
from bridge.vendors.q2 import readback as reconcile_q2
from bridge.vendors.q2.users import Q2Users
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.fakes.q2 import FakeQ2, running_fake_q2
from tests.harness import canonical, publish, running_bridge, settings_from, wait_until
from tests.harness import write_config as harness_config
from tests.sink_adapters import ADAPTERS, SinkAdapter

ALPHABET = string.ascii_letters + string.digits + '/+=%"\\'
DAY = date(2026, 11, 23)  # tests.harness.event_time's day


def secrets_of(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    """Secrets whose head has FRAGMENT_MIN different characters: a head like "000000" is in
    every timestamp the bridge writes, and would "leak" without having been echoed."""
    head = st.lists(
        st.sampled_from(ALPHABET), min_size=FRAGMENT_MIN, max_size=FRAGMENT_MIN, unique_by=str.lower
    ).map("".join)
    rest = st.text(ALPHABET, min_size=min_size - FRAGMENT_MIN, max_size=max_size - FRAGMENT_MIN)
    return st.tuples(head, rest).map("".join)


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def _json(text: str) -> str:
    return json.dumps(text)[1:-1]


# How a vendor may write a secret back (each independent of bridge.ops.redaction).
ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda s: s,
    "swapcase": str.swapcase,
    "json": _json,
    "json_slash": lambda s: _json(s).replace("/", "\\/"),  # PHP's json_encode
    "json_unicode": lambda s: "".join(f"\\u{ord(c):04x}" for c in s),
    "json_unicode_upper": lambda s: "".join(f"\\u{ord(c):04X}" for c in s),
    "json_twice": lambda s: _json(_json(s)),
    "repr": lambda s: repr(s)[1:-1],
    "quote": lambda s: quote(s, safe=""),
    "quote_lower": lambda s: _lower_hex(quote(s, safe="")),
    "quote_plus": quote_plus,
    "quote_twice": lambda s: quote(quote(s, safe=""), safe=""),
    "html": html.escape,
}


def leaks(text: str, secret: str) -> list[str]:
    """Each form in which the secret, or its first FRAGMENT_MIN characters, is in the text."""
    found = []
    for shown in {text.lower(), html.unescape(text).lower()}:
        for name, encode in ENCODINGS.items():
            for piece, what in ((secret, "whole"), (secret[:FRAGMENT_MIN], "head")):
                if encode(piece).lower() in shown:
                    found.append(f"{what} {name}: {encode(piece)!r}")
    return sorted(set(found))


def assert_no_leak(channel: str, text: str, secrets: Sequence[str]) -> None:
    for secret in secrets:
        assert not leaks(text, secret), f"{channel} leaks {leaks(text, secret)}:\n{text}"


# -- what a fake says ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Echo:
    """How the fake quotes a secret: in which form, cut after `cut` characters of that form
    (None: whole), in which kind of body."""

    encoding: str
    cut: int | None
    marker: str  # what the vendor writes after a cut: "" or "..."
    body: str  # json, php (every / as \/), ascii (every character of a string as \uXXXX), text

    def text(self, secret: str) -> str:
        written = ENCODINGS[self.encoding](secret)
        if self.cut is None:
            return f"the key {written} is not valid"
        return f"the key {written[: self.cut]}{self.marker}"

    def answer(self, fields: Mapping[str, Any], secret: str) -> str:
        """The body: `fields` with the message where they hold "@"."""
        message = self.text(secret)
        if self.body == "text":
            return message
        filled = json.loads(json.dumps(fields).replace('"@"', json.dumps(message)))
        if self.body == "php":
            return json.dumps(filled).replace("/", "\\/")
        if self.body == "ascii":
            return _ascii_json(filled)
        return json.dumps(filled, ensure_ascii=False)

    @property
    def status(self) -> int:
        return 400 if self.body == "text" else 200


def _ascii_json(value: Any) -> str:
    if isinstance(value, str):
        return '"' + "".join(f"\\u{ord(c):04x}" for c in value) + '"'
    if isinstance(value, dict):
        return "{" + ",".join(f"{_ascii_json(k)}:{_ascii_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_ascii_json(v) for v in value) + "]"
    return json.dumps(value)


@st.composite
def echoes(draw: st.DrawFn, secret: str) -> Echo:
    encoding = draw(st.sampled_from(sorted(ENCODINGS)))
    written = ENCODINGS[encoding](secret)
    head = len(ENCODINGS[encoding](secret[:FRAGMENT_MIN]))
    cut = draw(st.none() | st.integers(head, max(head, len(written) - 1)))
    marker = draw(st.sampled_from(["", "..."]))
    body = draw(st.sampled_from(["json", "php", "ascii", "text"]))
    return Echo(encoding, cut, marker, body)


# Answers with "@" where the vendor puts its message.
GO2CLOCK_ANSWER = {"status": "failure", "message": "Validation Error", "error": "@"}
Q2_ANSWER = {"statusCode": "ERROR", "message": "@", "nextRecord": "-1", "data": []}
MCTIME_ANSWER = {"items": [{"message": "@", "data": None}], "valid": False}
TIMETRACK_ANSWER = {"errors": [{"title": "Bad Request", "status": "400", "detail": "@"}]}


@contextlib.contextmanager
def restored_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


FAST = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- the masking function -------------------------------------------------------------------------


@FAST
@given(data=st.data(), secret=secrets_of(FRAGMENT_MIN, 48))
@example(data=None, secret="SeCrEt/abc+=%")
def test_no_form_of_a_secret_survives_masking(data: st.DataObject | None, secret: str) -> None:
    echo = Echo("json_slash", None, "", "json") if data is None else data.draw(echoes(secret))
    text = f"before {echo.answer(GO2CLOCK_ANSWER, secret)} after"
    masked = mask_secrets(text, [secret])
    assert not leaks(masked, secret), masked
    assert MASK in masked


@FAST
@given(
    secret=secrets_of(FRAGMENT_MIN + 1, 48),
    prose=st.text(string.ascii_letters + string.digits + " .,:;-_/+=\"'()[]{}", max_size=80),
    keep=st.integers(TAIL_MIN, FRAGMENT_MIN - 1),
    marker=st.sampled_from(["", "...", "\u2026"]),
)
def test_a_head_left_by_a_cut_is_masked_and_other_text_is_kept(
    secret: str, prose: str, keep: int, marker: str
) -> None:
    assert mask_secrets(prose, []) == prose
    alien = "".join(c for c in prose if c.lower() not in secret.lower())
    assert mask_secrets(alien, [secret]) == alien  # nothing of the secret: nothing changes
    cut = f"{alien} key {secret[:keep]}{marker}"
    assert mask_secrets(cut, [secret]) == f"{alien} key {MASK}{marker}"


def test_examples_from_the_issue() -> None:
    secret = "SeCrEt/abc+"
    for written in ("SeCrEt\\/abc+", "SeCrEt%2Fabc%2B", "secret%2fabc%2b", "SeCrEt/abc%2B"):
        assert mask_secrets(f"refused {written}.", [secret]) == f"refused {MASK}."
    token = "q2-" + "tOkEn/+=" * 40  # longer than the 200 characters a Q2 message is cut to
    assert MASK in mask_secrets(f"ERROR: {token}"[:200], [token])
    assert mask_secrets("", [secret]) == ""
    assert mask_secrets("abc", [""]) == "abc"  # an empty secret masks nothing


def test_a_json_answer_stays_the_same_json_when_masked() -> None:
    secret = 'abcdef"'  # its last character is the one closing the JSON string below
    body = json.dumps({"status": "failure", "error": secret[:-1], "n": 1}).encode()
    assert json.loads(mask_answer(body, [secret])) == {"status": "failure", "error": MASK, "n": 1}


def test_an_answer_with_a_lone_surrogate_is_still_json_once_masked() -> None:
    body = b'{"error": "\\ud800 SeCrEt/abc"}'
    assert json.loads(mask_answer(body, ["SeCrEt/abc"])) == {"error": f"\ud800 {MASK}"}


def test_decoding_views_stay_linear_on_hostile_text() -> None:
    text = "\\" * 50_000 + "%25" * 20_000 + "&#92;" * 10_000 + " end"
    assert mask_secrets(text, ["\\\\\\\\\\a\\\\"]) == text  # no backtracking blow-up


@settings(FAST, max_examples=30)
@given(data=st.data(), secret=secrets_of(FRAGMENT_MIN, 40))
def test_log_lines_mask_a_registered_secret_in_every_form(data: st.DataObject, secret: str) -> None:
    echo = data.draw(echoes(secret))
    stream = io.StringIO()
    said = echo.answer(GO2CLOCK_ANSWER, secret)
    with restored_logging():
        configure_logging(level="info", fmt="json", secrets=[secret], stream=stream)
        log = structlog.get_logger("test")
        log.warning("vendor.said", body=said, nested={"error": [said]})
        try:
            raise RuntimeError(said)  # noqa: TRY301 - a real traceback for log.exception to render
        except RuntimeError:
            log.exception("vendor.failed")
        logging.getLogger("aiohttp.client").warning("stdlib: %s", said)
    assert_no_leak("log", stream.getvalue(), [secret])
    assert stream.getvalue().count("***") >= 4


# -- each reader against its fake ---------------------------------------------------------------

ZONE = "Europe/Berlin"


def _job(adapter: SinkAdapter, action: Any, n: int, state: Mapping[str, Any]) -> Job:
    return Job(
        delivery_id=n,
        event_key=f"ev-{n}",
        sink=adapter.name,
        person=adapter.person(1),
        action=action,
        time=datetime(2026, 11, 23, 6 + n, 0, tzinfo=UTC),
        terminal="T1",
        attempt=1,
        state=state,
    )


async def _sink_details(
    session: aiohttp.ClientSession, adapter: SinkAdapter, secret: str, echo: Echo
) -> list[str]:
    answers = {"go2clock": GO2CLOCK_ANSWER, "mctime": MCTIME_ANSWER, "timetrack": TIMETRACK_ANSWER}
    fake = adapter.make_fake()
    credentials = dict.fromkeys(adapter.credentials, secret)
    fake.echo_key = lambda sent: echo.answer(answers[adapter.name], sent)
    # Go2Clock answers 200 with the verdict in the body; the others refuse with a 400
    fake.echo_status = echo.status if adapter.name == "go2clock" else 400
    details = []
    async with adapter.serve(fake) as url:
        sink: Sink = adapter.make_sink(session, url, credentials, 5.0)
        state: Mapping[str, Any] = {}
        for n, action in enumerate((*adapter.before, adapter.booking)):
            result: Result = await sink.send(_job(adapter, action, n, state))
            details.append(result.detail)
            if result.state is not None:
                state = result.state
    return details


async def _directory_errors(session: aiohttp.ClientSession, secret: str, echo: Echo) -> list[str]:
    errors = []
    g2c = FakeGo2Clock(api_key=secret)
    g2c.echo_key, g2c.echo_status = (
        lambda sent: echo.answer(GO2CLOCK_ANSWER, sent),
        echo.status,
    )
    async with running_fake_go2clock(g2c) as url:
        source = Go2ClockUsers(
            base_url=url, api_key=SecretStr(secret), timeout=5.0, id_column="userid"
        )
        errors.append(str(await fetch_one(source, session)))
    q2 = FakeQ2(developer_token=secret)
    q2.echo_token, q2.echo_status = (
        lambda sent: echo.answer(Q2_ANSWER, sent),
        echo.status,
    )
    async with running_fake_q2(q2) as url:
        users = Q2Users(
            url=url, company_id="fake-company", developer_token=SecretStr(secret), timeout=5.0
        )
        errors.append(str(await fetch_one(users, session)))
    return errors


async def _reconcile_errors(session: aiohttp.ClientSession, secret: str, echo: Echo) -> list[str]:
    from zoneinfo import ZoneInfo

    window = Window(DAY, DAY, ZoneInfo(ZONE))
    errors = []
    g2c = FakeGo2Clock(api_key=secret)
    g2c.echo_key, g2c.echo_status = (
        lambda sent: echo.answer(GO2CLOCK_ANSWER, sent),
        echo.status,
    )
    async with running_fake_go2clock(g2c) as url:
        config = Go2ClockConfig(base_url=url, api_key=SecretStr(secret), timeout_seconds=5)
        with pytest.raises(ReadError) as refused:
            await reconcile_go2clock.read_punches(session, config, window)
        errors.append(str(refused.value))
    q2 = FakeQ2(developer_token=secret)
    q2.echo_token, q2.echo_status = (
        lambda sent: echo.answer(Q2_ANSWER, sent),
        echo.status,
    )
    async with running_fake_q2(q2) as url:
        q2_config = ReconcileQ2Config(
            base_url=url, company_id="fake-company", developer_token=SecretStr(secret)
        )
        with pytest.raises(ReadError) as refused:
            await reconcile_q2.read_entries(session, q2_config, window)
        errors.append(str(refused.value))
    return errors


@settings(FAST, max_examples=25)
@given(data=st.data(), secret=secrets_of(FRAGMENT_MIN, 40), long_secret=secrets_of(201, 260))
@example(data=None, secret="SeCrEt/abc+", long_secret="q2-" + "tOkEn/+=" * 30)
def test_sinks_directory_and_reconcile_readers_mask_what_the_vendor_echoes(
    data: st.DataObject | None, secret: str, long_secret: str
) -> None:
    echo = Echo("json_slash", None, "", "json") if data is None else data.draw(echoes(secret))
    long_echo = Echo("quote", None, "", "json") if data is None else data.draw(echoes(long_secret))

    async def scenario() -> list[tuple[str, str, str]]:
        seen = []
        async with aiohttp.ClientSession() as session:
            for adapter in ADAPTERS:
                details = await _sink_details(session, adapter, secret, echo)
                seen.extend((f"{adapter.name} detail", detail, secret) for detail in details)
            errors = await _directory_errors(session, long_secret, long_echo)
            seen.extend(("directory source error", error, long_secret) for error in errors)
            errors = await _reconcile_errors(session, secret, echo)
            seen.extend(("reconcile error", error, secret) for error in errors)
        return seen

    seen = asyncio.run(scenario())
    for channel, text, key in seen:
        assert_no_leak(channel, text, [key])
    # the echo did reach what is shown (else this test would prove nothing)
    assert any(MASK in text for _, text, _ in seen)


# -- a running bridge, end to end -----------------------------------------------------------------


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path_factory.mktemp("broker"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    with restored_logging():
        yield


@dataclass
class Seen:
    """Everything the bridge showed in one run: channel name -> text."""

    texts: dict[str, str] = dataclasses.field(default_factory=dict)

    def add(self, channel: str, text: str) -> None:
        self.texts[channel] = self.texts.get(channel, "") + text


def _cli(seen: Seen, channel: str, argv: list[str]) -> int:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    seen.add(f"{channel} stdout", out.getvalue())
    seen.add(f"{channel} stderr", err.getvalue())
    return code


def _database_text(path: Path) -> str:
    """Every text (and blob, as text) value of every row of every table."""
    lines = []
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    text = (
                        value.decode("utf-8", errors="replace")
                        if isinstance(value, bytes)
                        else value
                    )
                    if isinstance(text, str):
                        lines.append(f"{table}: {text}")
    return "\n".join(lines)


async def _run_bridge(
    tmp: Path, broker: Mosquitto, key: str, token: str, echo: Echo, token_echo: Echo, seen: Seen
) -> Path:
    g2c, q2 = FakeGo2Clock(api_key=key), FakeQ2(developer_token=token)
    g2c.echo_key = lambda sent: echo.answer(GO2CLOCK_ANSWER, sent)
    g2c.echo_status = echo.status
    q2.echo_token = lambda sent: token_echo.answer(Q2_ANSWER, sent)
    q2.echo_status = token_echo.status
    async with running_fake_go2clock(g2c) as g2c_url, running_fake_q2(q2) as q2_url:
        q2_settings = {"company_id": "fake-company", "developer_token": token}
        extra = {
            "mqtt": {"client_id": f"redaction-{tmp.name}"},
            "sinks": {"go2clock": {"api_key": key}},
            "directory": {"sources": {"q2": {"enabled": True, "url": q2_url, **q2_settings}}},
            "reconcile": {"q2": {"base_url": q2_url, **q2_settings}},
        }
        config = harness_config(tmp, broker_port=broker.port, go2clock_url=g2c_url, extra=extra)
        settings_ = settings_from(config)
        log = io.StringIO()
        # as `clockin-bridge run` does (bridge.cli.cmd_run)
        configure_logging(level="info", fmt="json", secrets=settings_.secret_values(), stream=log)
        async with running_bridge(settings_) as bridge:
            await publish(broker.port, [(f"clockin/{tmp.name}/events", canonical(1))])
            store = bridge.store
            assert store is not None

            async def settled() -> bool:
                status = await store.status(now=0)
                sinks = status["sinks"]
                assert isinstance(sinks, dict)
                dead = sinks.get("go2clock", {}).get("states", {}).get("dead", 0)
                synced = await store.directory_sync_state()
                return dead >= 1 and any(row["error"] for row in synced)

            await wait_until(settled, timeout=15, what="a dead delivery and a failed sync")
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{bridge.http_port}/") as page,
            ):
                seen.add("status page", await page.text())
        seen.add("log", log.getvalue())
        # the operator's commands, against the same fakes (run in a thread: each command
        # runs its own event loop)
        arg = ["--config", str(config)]
        await asyncio.to_thread(_cli, seen, "dead list", ["dead", "list", *arg])
        await asyncio.to_thread(_cli, seen, "dead list --json", ["dead", "list", "--json", *arg])
        await asyncio.to_thread(_cli, seen, "dead show", ["dead", "show", "1", *arg])
        await asyncio.to_thread(
            _cli, seen, "dead show --json", ["dead", "show", "1", "--json", *arg]
        )
        days = ["--from", DAY.isoformat(), "--to", DAY.isoformat()]
        for sink in ("go2clock", "q2"):
            code = await asyncio.to_thread(
                _cli, seen, f"reconcile {sink}", ["reconcile", "--sink", sink, *days, *arg]
            )
            assert code == 3, seen.texts  # the vendor could not be read
        await asyncio.to_thread(_cli, seen, "directory sync", ["directory", "sync", *arg])
    return settings_.store.path


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), key=secrets_of(12, 40), token=secrets_of(201, 240))
@example(data=None, key='SeCrEt/abc+=%"\\x', token="q2-" + "tOkEn/+=" * 30)
def test_a_running_bridge_shows_no_form_of_a_secret_anywhere(
    data: st.DataObject | None,
    key: str,
    token: str,
    module_broker: Mosquitto,
    restore_logging: None,
) -> None:
    echo = Echo("json_slash", None, "", "json") if data is None else data.draw(echoes(key))
    token_echo = Echo("quote", None, "", "json") if data is None else data.draw(echoes(token))
    seen = Seen()
    with tempfile.TemporaryDirectory() as tmp:
        database = asyncio.run(
            _run_bridge(Path(tmp), module_broker, key, token, echo, token_echo, seen)
        )
        seen.add("database", _database_text(database))
    expected = {"log", "status page", "dead show stdout", "reconcile go2clock stderr", "database"}
    assert expected <= set(seen.texts)
    for channel, text in seen.texts.items():
        assert_no_leak(channel, text, [key, token])
    # the echoes did reach these channels, masked (else the test would prove nothing)
    assert MASK in seen.texts["dead show stdout"]
    assert MASK in seen.texts["database"]
