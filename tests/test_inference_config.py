"""The `inference` config section: defaults, schedules as config.yaml writes them, and the
mistakes an operator makes (an unquoted time, a window longer than a day)."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.config import ConfigError, load_settings
from bridge.store.inference import Between

BERLIN = ZoneInfo("Europe/Berlin")


def test_the_default_is_a_16_hour_shift_without_schedules() -> None:
    rules = load_settings(None).inference.rules(tz=BERLIN, window_seconds=60)
    assert (rules.max_shift, rules.shifts, rules.window_seconds) == (timedelta(hours=16), (), 60)


def test_a_schedule_as_config_yaml_writes_it(tmp_path: Path) -> None:
    settings = load_settings(
        _write(
            tmp_path,
            "inference:\n"
            "  max_shift_hours: 12\n"
            "  shifts:\n"
            "    - name: night\n"
            '      start: "22:00"\n'
            '      end: "06:00"\n'
            "      margin_before: 30\n"
            "      terminals: [hall]\n"
            "      between: toggle\n",
        )
    )
    rules = settings.inference.rules(tz=BERLIN, window_seconds=30)
    [night] = rules.shifts
    assert (night.start, night.end, night.margin_before) == (time(22), time(6), timedelta(0, 1800))
    assert (night.margin_after, night.terminals, night.between) == (
        timedelta(hours=1),
        frozenset({"hall"}),
        Between.TOGGLE,
    )
    assert rules.max_shift == timedelta(hours=12)


@pytest.mark.parametrize(
    ("shift", "problem"),
    [
        ("{name: n, start: 22:00, end: '06:00'}", "quoted"),  # YAML reads 22:00 as 1320
        ("{name: n, start: '24:00', end: '06:00'}", "HH:MM"),
        ("{name: n, start: '08:00', end: '08:00'}", "differ"),
        ("{name: n, start: '06:00', end: '22:00', margin_before: 300, margin_after: 300}", "24"),
        ("{name: n, start: '06:00', end: '14:00', between: pairs}", "between"),
    ],
)
def test_a_bad_shift_is_a_config_error(tmp_path: Path, shift: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings(_write(tmp_path, f"inference:\n  shifts: [{shift}]\n"))


def test_shift_names_are_unique(tmp_path: Path) -> None:
    shift = "{name: n, start: '06:00', end: '14:00'}"
    with pytest.raises(ConfigError, match="unique"):
        load_settings(_write(tmp_path, f"inference:\n  shifts: [{shift}, {shift}]\n"))


def test_groups_need_the_directory_column_that_names_them(tmp_path: Path) -> None:
    shift = "{name: n, start: '22:00', end: '06:00', groups: [night]}"
    with pytest.raises(ConfigError, match="group_column"):
        load_settings(_write(tmp_path, f"inference:\n  shifts: [{shift}]\n"))
    settings = load_settings(
        _write(tmp_path, f"inference:\n  group_column: shift\n  shifts: [{shift}]\n")
    )
    [night] = settings.inference.rules(tz=BERLIN, window_seconds=60).shifts
    assert night.groups == frozenset({"night"})


def test_max_shift_hours_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOCKIN_INFERENCE__MAX_SHIFT_HOURS", "10")
    assert load_settings(_write(tmp_path, "")).inference.max_shift_hours == 10


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path
