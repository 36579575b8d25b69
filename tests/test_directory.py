"""bridge.directory.file: the badge CSV, its problems, and reloading it when it changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.directory.file import Directory, DirectoryError, DirectoryFile, Person

CSV = """\
# badge directory, exported 2026-11-20
badge,userid,name,go2clock_id
04A1B2C3,12,Ada Lovelace,g-12

04:a1:b2:c4,13,Alan Turing,g-13
7748328,14,"Hopper, Grace",g-14
"""


def test_rows_become_people() -> None:
    directory = Directory.from_csv_text(CSV)
    assert len(directory) == 3
    assert directory.problems == ()
    ada = directory.lookup("04A1B2C3")
    assert ada == Person("04A1B2C3", "12", "Ada Lovelace", {"go2clock_id": "g-12"})
    assert directory.lookup("04a1b2c4") == Person(
        "04A1B2C4", "13", "Alan Turing", {"go2clock_id": "g-13"}
    )
    grace = directory.lookup("7748328")
    assert grace is not None
    assert grace.name == "Hopper, Grace"


@pytest.mark.parametrize("badge", ["04A1B2C3", "04a1b2c3", " 04:A1:B2:C3 ", "04-a1-b2-c3"])
def test_lookup_normalises_the_badge(badge: str) -> None:
    person = Directory.from_csv_text(CSV).lookup(badge)
    assert person is not None
    assert person.userid == "12"


@pytest.mark.parametrize("badge", ["04A1B2C5", "", "  ", "04A1\x00"])
def test_lookup_of_an_unknown_or_invalid_badge_is_none(badge: str) -> None:
    assert Directory.from_csv_text(CSV).lookup(badge) is None


def test_columns_in_any_order_and_case_with_name_optional() -> None:
    directory = Directory.from_csv_text("UserID , Badge\n12,04a1\n")
    assert directory.lookup("04A1") == Person("04A1", "12", "", {})


def test_semicolon_separated_exports() -> None:
    directory = Directory.from_csv_text("badge;userid;name\n04A1;12;Lovelace, Ada\n")
    person = directory.lookup("04A1")
    assert person is not None
    assert (person.userid, person.name) == ("12", "Lovelace, Ada")


def test_a_byte_order_mark_is_not_part_of_the_header() -> None:
    assert len(Directory.from_csv_text("\ufeffbadge,userid\n04A1,12\n")) == 1


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (",12,Nobody", "line 3: badge '' is not a card UID (empty)"),
        ("04\tA1,12,Tab", "line 3: badge '04\\tA1' is not a card UID (has non-printable"),
        ("04A9,,Nobody", "line 3: badge 04A9 has no userid"),
        ("04A9,15,Smith, John", "line 3: 4 fields, the header names 3"),
        ("04A9,1\x002,Nul", "line 3: userid '1\\x002' has non-printable characters"),
    ],
)
def test_bad_rows_are_skipped_and_reported(row: str, problem: str) -> None:
    directory = Directory.from_csv_text(f"badge,userid,name\n04A1,12,Ada\n{row}\n")
    assert len(directory) == 1
    assert len(directory.problems) == 1
    assert directory.problems[0].startswith(problem)


def test_trailing_empty_cells_are_harmless() -> None:
    directory = Directory.from_csv_text("badge,userid,name\n04A1,12,Ada,,\n")
    assert directory.lookup("04A1") == Person("04A1", "12", "Ada", {})
    assert directory.problems == ()


def test_a_short_row_leaves_the_missing_columns_empty() -> None:
    directory = Directory.from_csv_text("badge,userid,name,sink_id\n04A1,12\n")
    assert directory.lookup("04A1") == Person("04A1", "12", "", {"sink_id": ""})


def test_a_badge_listed_for_two_userids_is_left_unmapped() -> None:
    text = "badge,userid,name\n04A1,12,Ada\n04:a1,13,Alan\n04B2,14,Grace\n"
    directory = Directory.from_csv_text(text)
    assert directory.lookup("04A1") is None
    assert directory.lookup("04B2") is not None
    assert directory.problems == (
        "badge 04A1 is listed twice with different userids (12, 13): left unmapped",
    )


def test_a_badge_listed_three_times() -> None:
    text = "badge,userid\n04A1,12\n04A1,13\n04A1,12\n"
    directory = Directory.from_csv_text(text)
    assert directory.lookup("04A1") is None
    assert directory.problems == (
        "badge 04A1 is listed 3 times with different userids (12, 13): left unmapped",
    )


def test_a_badge_with_different_sink_ids_is_left_unmapped() -> None:
    text = "badge,userid,go2clock_id\n04A1,12,g-12\n04A1,12,g-99\n"
    directory = Directory.from_csv_text(text)
    assert directory.lookup("04A1") is None
    assert directory.problems == (
        "badge 04A1 is listed twice for userid 12 with different go2clock_id: left unmapped",
    )


def test_an_exact_duplicate_row_is_harmless() -> None:
    text = "badge,userid,name\n04A1,12,Ada\n04a1,12,Ada\n"
    directory = Directory.from_csv_text(text)
    assert directory.lookup("04A1") == Person("04A1", "12", "Ada", {})
    assert directory.problems == ()


def test_one_person_may_hold_several_badges() -> None:
    directory = Directory.from_csv_text("badge,userid\n04A1,12\n04A2,12\n")
    assert len(directory) == 2
    assert directory.problems == ()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no header row"),
        ("# only a comment\n\n", "no header row"),
        ("04A1,12,Ada\n", "has no badge or userid column"),
        ("badge,name\n04A1,Ada\n", "has no userid column"),
        ("card,userid\n04A1,12\n", "has no badge column"),
        ("badge,userid,badge\n04A1,12,04A2\n", "names badge more than once"),
    ],
)
def test_a_file_without_a_usable_header_is_an_error(text: str, reason: str) -> None:
    with pytest.raises(DirectoryError, match=reason):
        Directory.from_csv_text(text)


def test_empty_and_snapshot_immutability() -> None:
    assert len(Directory.empty()) == 0
    assert Directory.empty().lookup("04A1") is None
    person = Directory.from_csv_text(CSV).lookup("04A1B2C3")
    assert person is not None
    with pytest.raises(TypeError):
        person.extra["go2clock_id"] = "changed"  # type: ignore[index]


# --- files --------------------------------------------------------------------------------


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "badges.csv"
    path.write_text(CSV, encoding="utf-8")
    assert len(Directory.load(path)) == 3


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read badge directory"),
        (b"badge,userid\n04A1,\xff\xfe\n", "is not UTF-8 text"),
        (b"name,email\nAda,ada@example.org\n", "has no badge or userid column"),
    ],
)
def test_load_errors_name_the_file(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "badges.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DirectoryError, match=reason) as caught:
        Directory.load(path)
    assert str(path) in str(caught.value)


def _rewrite(path: Path, text: str) -> None:
    """Write and move the mtime on, so the change shows even on a coarse-clock filesystem."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_directory_file_reloads_only_when_changed(tmp_path: Path) -> None:
    path = tmp_path / "badges.csv"
    path.write_text("badge,userid\n04A1,12\n", encoding="utf-8")
    source = DirectoryFile(path)
    first = source.current
    assert first.lookup("04A1") is not None
    assert source.reload_if_changed() is False
    assert source.current is first

    _rewrite(path, "badge,userid\n04A1,12\n04B2,13\n")
    assert source.reload_if_changed() is True
    assert len(source.current) == 2
    assert len(first) == 1  # the old snapshot is untouched
    assert source.reload_if_changed() is False


def test_a_same_size_rewrite_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "badges.csv"
    path.write_text("badge,userid\n04A1,12\n", encoding="utf-8")
    source = DirectoryFile(path)
    _rewrite(path, "badge,userid\n04A1,13\n")
    assert source.reload_if_changed() is True
    person = source.current.lookup("04A1")
    assert person is not None
    assert person.userid == "13"


def test_a_replaced_file_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "badges.csv"
    path.write_text("badge,userid\n04A1,12\n", encoding="utf-8")
    source = DirectoryFile(path)
    fresh = tmp_path / "badges.csv.new"
    fresh.write_text("badge,userid\n04A1,77\n", encoding="utf-8")
    stat = path.stat()
    os.utime(fresh, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime and size: new inode
    fresh.replace(path)
    assert source.reload_if_changed() is True
    person = source.current.lookup("04A1")
    assert person is not None
    assert person.userid == "77"


def test_a_broken_file_keeps_the_last_good_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "badges.csv"
    path.write_text("badge,userid\n04A1,12\n", encoding="utf-8")
    source = DirectoryFile(path)
    good = source.current

    _rewrite(path, "card,person\n04A1,12\n")
    with pytest.raises(DirectoryError, match="has no badge or userid column"):
        source.reload_if_changed()
    assert source.current is good
    assert source.reload_if_changed() is False  # reported once, not on every poll

    _rewrite(path, "badge,userid\n04A1,12\n04B2,13\n")
    assert source.reload_if_changed() is True
    assert len(source.current) == 2


def test_a_deleted_file_keeps_the_last_good_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "badges.csv"
    path.write_text("badge,userid\n04A1,12\n", encoding="utf-8")
    source = DirectoryFile(path)
    good = source.current
    path.unlink()
    with pytest.raises(DirectoryError, match="cannot read badge directory"):
        source.reload_if_changed()
    assert source.reload_if_changed() is False
    assert source.current is good
    path.write_text("badge,userid\n04A1,12\n04B2,13\n", encoding="utf-8")
    assert source.reload_if_changed() is True
    assert len(source.current) == 2


def test_a_missing_file_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match="cannot read badge directory"):
        DirectoryFile(tmp_path / "absent.csv")


def test_a_broken_file_at_start_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "badges.csv"
    path.write_text("no header here\n", encoding="utf-8")
    with pytest.raises(DirectoryError, match="has no badge or userid column"):
        DirectoryFile(path)
