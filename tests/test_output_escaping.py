"""What operator commands print of untrusted text (topics, reasons, payloads, errors, badges)
cannot drive the operator's terminal: control and bidi characters come out escaped. And
`rejected list` pages without reading payloads. Commands run as an operator runs them
(`python -m bridge ...`) on real SQLite files."""

from __future__ import annotations

import contextlib
import json
import time
from argparse import Namespace
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.commands.common import emit
from bridge.commands.table import format_table, printable
from bridge.delivery import Result
from bridge.events import Action, ClockEvent
from bridge.store import Incoming, Rejection, Store
from bridge.store.rejected import PAYLOAD_KEPT
from tests.test_cli import cli, write_config
from tests.test_rejected_storage import BERLIN

MORNING = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
SINK = "go2clock"
# ESC sequences (clear the screen, set the window title), a bell, U+202E (reads backwards),
# an isolate, a C1 CSI, a carriage return that would overwrite the line, a lone surrogate.
HOSTILE = "door\x1b[2J\x1b]0;owned\x07\u202eevil\u2066\x9b31m\rfake"
RAW = ("\x1b", "\x07", "\u202e", "\u2066", "\x9b", "\r")
TOPIC = f"clockin/{HOSTILE}/events"
PAYLOAD = b'{"badge": "\x1b[31mB1\xe2\x80\xae", "bad": "\xff\xfe"}'  # ESC, U+202E, not UTF-8


@contextlib.asynccontextmanager
async def opened(db: Path) -> AsyncIterator[Store]:
    async with Store.open(db, site_tz=BERLIN) as store:
        yield store


def config_for(tmp_path: Path, db: Path, **sections: object) -> str:
    config = {
        "site": {"timezone": "Europe/Berlin"},
        "store": {"path": str(db)},
        "http": {"enabled": False},
        **sections,
    }
    return str(write_config(tmp_path, config))


def run(*args: str, cwd: Path, code: int = 0) -> str:
    result = cli(*args, cwd=cwd)
    assert result.returncode == code, result.stderr + result.stdout
    return result.stdout


def assert_escaped(text: str) -> None:
    """No raw control or bidi character; each shown as an escape (a table cell shows a line
    break or carriage return as a space, so that its row stays one line)."""
    for char in RAW:
        assert char not in text, f"{char!r} printed raw"
    for escape in ("\\x1b[2J", "\\x07", "\\u202e", "\\u2066", "\\x9b"):
        assert escape in text


def nobody(event: ClockEvent) -> Mapping[str, str | None]:
    return {}


# --- the one escaping function (pure) ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain door-1 ÄÖÜ 東京", "plain door-1 ÄÖÜ 東京"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("a\x00b\x7fc\x85d", "a\\x00b\\x7fc\\x85d"),
        ("line\nbreak\ttab\rcr", "line\\nbreak\\ttab\\rcr"),
        (
            "\u202aLRE\u202eRLO\u2066LRI\u2069PDI\u200fRLM",
            "\\u202aLRE\\u202eRLO\\u2066LRI\\u2069PDI\\u200fRLM",
        ),
        ("\u2028sep\ud800", "\\u2028sep\\ud800"),
        ("back\\slash", "back\\slash"),
    ],
)
def test_printable_escapes_controls_and_bidi_only(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_a_table_cell_keeps_its_row_and_its_alignment() -> None:
    table = format_table(["id", "error"], [[1, "first\nsecond\x1b[2J"], [22, "\u202e"]])
    assert table.splitlines() == [
        "id  error",
        " 1  first second\\x1b[2J",
        "22  \\u202e",
    ]


def test_emit_escapes_every_line_it_prints_and_json_escapes_itself(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The one output path of every command (reconcile's report and show views are footers)."""
    emit(Namespace(json=False), {}, footer=[f"name {HOSTILE}"], empty=HOSTILE)
    assert_escaped(capsys.readouterr().out)
    emit(Namespace(json=True), {"name": HOSTILE})
    out = capsys.readouterr().out
    assert all(char not in out for char in RAW)
    assert json.loads(out) == {"name": HOSTILE}


# --- rejected list and show ----------------------------------------------------------------


async def test_rejected_show_and_list_escape_topic_reason_and_payload(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    async with opened(db) as store:
        await store.ingest(
            [Rejection(TOPIC, "canonical", PAYLOAD, f"bad badge {HOSTILE}", MORNING)],
            resolve=nobody,
            received_at=MORNING,
        )
    config = config_for(tmp_path, db)

    shown = run("rejected", "show", "1", "--config", config, cwd=tmp_path)
    assert_escaped(shown)
    assert '"badge": "\\x1b[31mB1\\u202e", "bad": "\\xff\\xfe"}' in shown  # payload line
    assert "\\rfake" in shown  # a carriage return would have let "fake" overwrite the line
    assert "payload_sha256" in shown
    listed = run("rejected", "list", "--config", config, cwd=tmp_path)
    assert_escaped(listed)
    assert len(listed.splitlines()) == 2, "one header, one row: no line break got through"

    # JSON: escaped by json.dumps, and the exact text comes back when parsed
    data = json.loads(run("rejected", "show", "1", "--json", "--config", config, cwd=tmp_path))
    assert data["topic"] == TOPIC
    assert data["payload_size"] == len(PAYLOAD)
    raw = run("rejected", "list", "--json", "--config", config, cwd=tmp_path)
    assert all(char not in raw for char in RAW)
    assert json.loads(raw)[0]["reason"] == f"bad badge {HOSTILE}"


async def test_dead_show_and_list_escape_a_vendor_error_and_a_badge(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    event = ClockEvent(
        key="e1",
        terminal="door-1",
        badge=f"B1{HOSTILE}",
        user=None,
        action=Action.IN,
        time=MORNING,
        time_given=True,
    )
    async with opened(db) as store:
        await store.ingest(
            [Incoming(event, "clockin/door-1/events")],
            resolve=lambda e: {SINK: f"p{HOSTILE}"},
            received_at=MORNING,
        )
        now = time.time()
        [job] = await store.claim(SINK, limit=1, now=now)
        await store.settle(job, Result.dead(f"HTTP 400: {HOSTILE}"), retry_at=now, now=now)
    config = config_for(tmp_path, db)
    for command in (["dead", "list"], ["dead", "show", "1"]):
        assert_escaped(run(*command, "--config", config, cwd=tmp_path))


# --- reprocess of a cut payload ------------------------------------------------------------


async def test_reprocess_reports_a_payload_kept_in_part_instead_of_parsing_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "queue.db"
    # Valid JSON cut at 16 KiB would no longer parse; a prefix could even parse differently.
    note = "x" * (PAYLOAD_KEPT + 100)
    payload = json.dumps({"badge": "B1", "action": "in", "note": note}).encode()
    async with opened(db) as store:
        await store.ingest(
            [Rejection("clockin/door-1/events", "canonical", payload, "too big", MORNING)],
            resolve=nobody,
            received_at=MORNING,
        )
    config = config_for(tmp_path, db)
    out = run("rejected", "reprocess", "1", "--json", "--config", config, cwd=tmp_path, code=1)
    [result] = json.loads(out)["results"]
    assert result["result"] == "rejected"
    assert f"kept only in part ({PAYLOAD_KEPT} of {len(payload)} bytes)" in result["reason"]
    text = run("rejected", "show", "1", "--config", config, cwd=tmp_path)
    assert f"only the first {PAYLOAD_KEPT} of {len(payload)} bytes were kept" in text


# --- paging --------------------------------------------------------------------------------


@pytest.mark.slow
async def test_rejected_list_pages_newest_first_over_20000_rows(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    async with opened(db) as store:
        for start in range(0, 20_000, 2_000):
            await store.ingest(
                [
                    Rejection(
                        "clockin/door-1/events",
                        "canonical",
                        f"junk {n} ".encode() * 100,
                        "payload is not JSON",
                        MORNING + timedelta(seconds=n),
                    )
                    for n in range(start, start + 2_000)
                ],
                resolve=nobody,
                received_at=MORNING,
            )
    config = config_for(tmp_path, db)

    page = json.loads(run("rejected", "list", "--json", "--config", config, cwd=tmp_path))
    assert [row["id"] for row in page] == list(range(20_000, 19_950, -1))
    assert all("payload" not in row for row in page)
    older = run("rejected", "list", "--before", "19951", "--limit", "3", "--json", "--config",
                config, cwd=tmp_path)  # fmt: skip
    assert [row["id"] for row in json.loads(older)] == [19_950, 19_949, 19_948]

    text = run("rejected", "list", "--config", config, cwd=tmp_path).splitlines()
    assert len(text) == 1 + 50 + 1
    assert text[1].split()[0] == "20000"
    assert text[-1] == "older ones: rejected list --before 19951"
    last = run("rejected", "list", "--before", "3", "--config", config, cwd=tmp_path)
    assert [line.split()[0] for line in last.splitlines()[1:]] == ["2", "1"], "no 'older' line"
    assert cli("rejected", "list", "--limit", "0", "--config", config, cwd=tmp_path).returncode == 2
