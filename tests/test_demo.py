"""`clockin-bridge demo`: the whole morning in a real subprocess, and the check it relies on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from bridge.demo import runner
from bridge.demo.report import Outcome, problems
from bridge.demo.scenario import MORNING, SITE_TZ, expected
from bridge.events import Action

ROOT = Path(__file__).resolve().parent.parent
CHECKTYPES = {Action.IN: 0, Action.OUT: 1, Action.BREAK_START: 2, Action.BREAK_END: 3}
DAY = date(2026, 11, 23)


def _summary_number(output: str, label: str) -> int:
    match = re.search(rf"^{label}\s+(\d+)\b", output, flags=re.MULTILINE)
    assert match, f"no '{label}' line in the summary:\n{output[-3000:]}"
    return int(match.group(1))


def test_demo_runs_a_morning_end_to_end() -> None:
    pytest.importorskip("amqtt", reason="the demo needs the 'demo' extra (amqtt)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "demo", "--speed", "20"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    output = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{output[-4000:]}\n{done.stderr[-4000:]}"
    assert re.search(r"status page and /metrics on http://127\.0\.0\.1:\d+/", output)
    want = expected(MORNING, day=DAY, account_tz=SITE_TZ)
    assert _summary_number(output, "received") == want.messages
    assert _summary_number(output, "rejected") == 1
    assert _summary_number(output, "duplicates") >= 2  # the double swipe and the MQTT resend
    accepted = len(want.punches)
    assert f"stored       {accepted + 1}  events ({accepted} accepted, 1 double swipe)" in output
    assert _summary_number(output, "delivered") == accepted
    assert _summary_number(output, "retried") >= 1  # the Go2Clock outage
    assert _summary_number(output, "dead") == 0
    assert f"Go2Clock now holds {accepted} punches" in output
    assert "OK: Go2Clock holds every accepted swipe exactly once." in output
    for line in ("event.duplicate", "event.rejected", "event.unmapped", "event.mapped"):
        assert line in output, f"no {line} log line in the demo's output"


def _outcome(punches: Counter[tuple[str, str, str]]) -> Outcome:
    """What a correct run would observe, holding `punches` at Go2Clock."""
    want = expected(MORNING, day=DAY, account_tz=SITE_TZ)
    records = [
        {"userid": userid, "checktime": checktime, "checktype": CHECKTYPES[Action(action)]}
        for userid, checktime, action in punches.elements()
    ]
    status = {
        "events": {"accepted": len(want.punches), "duplicate": want.doubles},
        "rejected": want.rejected,
        "retried": 2,
        "sinks": {"go2clock": {"states": {"delivered": len(want.punches)}}},
    }
    return Outcome(status=status, counts={"duplicate": 1}, records=records, checktypes=CHECKTYPES)


def test_the_check_passes_when_every_punch_arrived_once() -> None:
    want = expected(MORNING, day=DAY, account_tz=SITE_TZ)
    assert problems(_outcome(want.punches), want) == []


def test_the_check_catches_a_repeated_and_a_missing_punch() -> None:
    want = expected(MORNING, day=DAY, account_tz=SITE_TZ)
    first, second = sorted(want.punches)[:2]
    held = want.punches + Counter([first]) - Counter([second])
    found = problems(_outcome(held), want)
    assert any("lacks" in problem and second[1] in problem for problem in found), found
    assert any("repeated" in problem and first[1] in problem for problem in found), found


def test_the_morning_has_every_case_the_demo_promises() -> None:
    want = expected(MORNING, day=DAY, account_tz=SITE_TZ)
    assert (want.doubles, want.resends, want.rejected) == (1, 1, 1)
    assert 12 <= want.messages <= 20
    # checktime is Go2Clock's wall clock in the account zone (CET on this November day)
    assert ("1001", "2026-11-23T07:52:04", "in") in want.punches


def test_without_the_demo_extra_it_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runner, "amqtt_available", lambda: False)
    assert runner.run_demo(speed=1) == 1
    assert "pip install 'clockin-bridge[demo]'" in capsys.readouterr().err


def test_the_demo_binds_no_fixed_port(tmp_path: Path) -> None:
    """Its broker and simulator take free ports; so does its status page (9108 may be taken by
    a bridge running on the same machine)."""
    settings = runner.demo_settings(tmp_path, broker_port=1, go2clock_url="http://127.0.0.1:9")
    assert settings.http.port == 0
