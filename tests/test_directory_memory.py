"""The directory's memory: people packed in flat buffers (bridge.directory.table), not one
Python object per person, and the lookups, merge and reloads that now go through them.

The memory tests count what the loaded directory holds (tracemalloc, gc), not time: with a
Person, its dict and the merge's origins per row the daemon held ~1.5 KiB a person."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.directory.file import Directory, DirectoryFile
from bridge.directory.live import LiveDirectory
from bridge.directory.merge import merge, merge_directory
from bridge.directory.records import Record
from bridge.directory.table import PackedTable
from bridge.store import Store

PEOPLE = 10_000
# Packed, a person costs ~60-110 bytes (badge, row text, two offsets; twice when the file is
# merged with a source). One object per person cost ~1,500. The bound leaves room for both.
MAX_BYTES_PER_PERSON = 400
MAX_OBJECTS = 1_000  # gc-tracked objects a load may leave behind, whatever its size


def csv_text(people: range) -> str:
    rows = ["badge,userid,name,mctime_user_id"]
    rows += [f"F{n:05d},{10000 + n},Person {n},mc-{n}" for n in people]
    return "\n".join(rows) + "\n"


def source_rows(people: range) -> list[dict[str, object]]:
    return [
        {"badge": f"G{n:05d}", "join_on": None, "fields": {"userid": f"g{n}", "name": f"G {n}"}}
        for n in people
    ]


async def test_a_loaded_directory_holds_no_object_per_person(tmp_path: Path) -> None:
    """The daemon's LiveDirectory, after loading a file and a source's cache of 10,000 people
    each, holds a few hundred KiB and a handful of objects, not 20,000 Persons."""
    path = tmp_path / "directory.csv"
    path.write_text(csv_text(range(PEOPLE)))
    async with Store.open(tmp_path / "bridge.db", site_tz=ZoneInfo("UTC")) as store:
        await store.save_directory_source("go2clock", source_rows(range(PEOPLE)), now=1.0)
        await store.directory_revision()  # aiosqlite keeps its last answer until the next
        gc.collect()
        objects_before = len(gc.get_objects())
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            live = LiveDirectory(file=DirectoryFile(path), sources=["go2clock"])
            assert await live.refresh(store, force=True)
            await store.directory_revision()
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        objects_after = len(gc.get_objects())
    assert len(live.current) == 2 * PEOPLE
    assert held / len(live.current) < MAX_BYTES_PER_PERSON, f"{held} bytes held"
    assert objects_after - objects_before < MAX_OBJECTS
    person = live.current.lookup("g09999")
    assert person is not None
    assert (person.userid, person.name) == ("g9999", "G 9999")


def test_a_file_snapshot_holds_no_object_per_person() -> None:
    text = csv_text(range(PEOPLE))
    gc.collect()
    objects_before = len(gc.get_objects())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        directory = Directory.from_csv_text(text)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(directory) == PEOPLE
    assert held / PEOPLE < MAX_BYTES_PER_PERSON / 2, f"{held} bytes held"
    assert len(gc.get_objects()) - objects_before < MAX_OBJECTS


# --- the packed table -------------------------------------------------------------------------


def test_packed_table_finds_every_badge_and_no_other() -> None:
    badges = sorted(f"{n:04X}" for n in range(0, 3000, 3))
    table = PackedTable((badge, f"u{badge}", "", {}) for badge in badges)
    assert len(table) == len(badges)
    for badge in badges:
        assert table.get(badge) == (badge, f"u{badge}", "", {})
    for missing in ("", "0001", "0BB9", "FFFF", "00000", "/", "~"):  # between, before, after
        assert table.get(missing) is None
        assert missing not in table
    assert PackedTable([]).get("A") is None


def test_packed_table_keeps_each_persons_columns_in_their_order() -> None:
    rows = [
        ("A1", "7", "Zoë Ångström", {"mctime_user_id": "mc-7", "email": ""}),
        ("B2", "8", "", {"email": "b@x.org"}),  # no mctime_user_id at all: absent, not ""
        ("C3", "9", 'a "quoted", name\\', {}),
        ("D4", "10", "odd\x1fname", {"x": "\x1f", "y": "\x1e"}),  # the separator: as JSON
        ("E5", "\x1e11", "", {}),  # starts with the JSON mark
    ]
    table = PackedTable(rows)
    assert list(table.rows()) == rows
    assert list(table.get("A1")[3]) == ["mctime_user_id", "email"]  # type: ignore[index]
    assert "mctime_user_id" not in table.get("B2")[3]  # type: ignore[index]


def test_packed_table_orders_badges_as_str_does() -> None:
    badges = sorted(["É1", "Z9", "A0", "0", "ÿ", "€", "a"])  # UTF-8 byte order = code points
    table = PackedTable((badge, badge, "", {}) for badge in badges)
    assert [row[0] for row in table.rows()] == badges
    assert all(table.get(badge) is not None for badge in badges)


def test_packed_table_refuses_unsorted_or_repeated_badges() -> None:
    with pytest.raises(ValueError, match="out of order"):
        PackedTable([("B", "1", "", {}), ("A", "2", "", {})])
    with pytest.raises(ValueError, match="out of order"):
        PackedTable([("A", "1", "", {}), ("A", "2", "", {})])


# --- what the daemon resolves against, as before ------------------------------------------------


def account(join_on: str, **fields: str) -> Record:
    return Record(None, fields, join_on=join_on)


SOURCES = {
    "go2clock": [
        Record("04A1", {"userid": "7", "name": "Ada"}),
        Record("04B2", {"userid": "8"}),
        Record("04B2", {"userid": "9"}),  # a conflict: left unmapped
        Record("04C3", {"userid": "10", "email": "GRACE@x.org"}),
    ],
    "q2": [Record("04A1", {"name": "Ada L.", "employee_number": "E7"})],
    "mctime": [account("employee_number", mctime_user_id="mc-7", employee_number="E7")],
    "timetrack": [account("email", timetrack_username="grace", email="grace@X.org")],
}
FILE = "badge,userid,name,timetrack_username\n04d4,12,Dora,\n04c3,10,Grace H.,gh\n"


def test_the_daemons_merge_maps_as_the_commands_merge() -> None:
    file = Directory.from_csv_text(FILE)
    full = merge(file, SOURCES).directory
    packed = merge_directory(file, SOURCES)
    assert packed.people() == full.people()
    assert packed.problems == full.problems
    assert packed.conflicted == full.conflicted == {"04B2"}
    grace = packed.lookup(" 04-c3 ")  # normalised like a terminal's badge
    assert grace is not None
    assert (grace.userid, grace.name, dict(grace.extra)) == (
        "10",
        "Grace H.",
        {"email": "GRACE@x.org", "timetrack_username": "gh"},  # the file's value wins
    )
    ada = packed.lookup("04a1")
    assert ada is not None
    assert dict(ada.extra) == {"employee_number": "E7", "mctime_user_id": "mc-7"}
    assert packed.lookup("04B2") is None


def test_without_source_records_the_file_snapshot_is_the_directory() -> None:
    file = Directory.from_csv_text(FILE)
    assert merge_directory(file, {"go2clock": []}) is file
    assert len(merge_directory(None, {"go2clock": []})) == 0
    merged = merge(file, {"go2clock": []}).directory
    for person in merged.people():
        kept = file.lookup(person.badge)
        assert kept is not None
        assert (kept.userid, kept.name) == (person.userid, person.name)
        assert {k: v for k, v in kept.extra.items() if v} == dict(person.extra)


async def test_a_file_change_while_serving_merges_the_cache_again(tmp_path: Path) -> None:
    """The source's records are not kept between merges: a changed file is merged with what
    the cache holds, and a lookup on the snapshot taken before still answers as before."""
    path = tmp_path / "directory.csv"
    path.write_text("badge,userid\n04A1,12\n")
    async with Store.open(tmp_path / "bridge.db", site_tz=ZoneInfo("UTC")) as store:
        rows = [{"badge": "04B2", "join_on": None, "fields": {"userid": "8", "name": "Bo"}}]
        await store.save_directory_source("go2clock", rows, now=1.0)
        file = DirectoryFile(path)
        live = LiveDirectory(file=file, sources=["go2clock"])
        assert await live.refresh(store, force=True)
        serving = live.current
        path.write_text("badge,userid\n04A1,13\n04C3,14\n")
        assert file.reload_if_changed()
        assert await live.refresh(store) is False  # the cache did not change: no merge yet
        assert await live.refresh(store, force=True)
    now = live.current
    assert [(p.badge, p.userid) for p in now.people()] == [
        ("04A1", "13"),
        ("04B2", "8"),
        ("04C3", "14"),
    ]
    old = serving.lookup("04a1")
    assert old is not None
    assert old.userid == "12"
    assert serving.lookup("04C3") is None


def test_repeated_and_alternating_lookups_answer_alike() -> None:
    """Directory remembers its last lookup (ingest asks twice per swipe): never a stale or
    mixed answer, whatever the order."""
    directory = Directory.from_csv_text("badge,userid,name\n04A1,12,Ada\n04B2,13,\n")
    asked = ["04a1", "04a1", "04B2", "nope", "nope", "04-a1", "", "", "04B2", "04a1"]
    expected = ["12", "12", "13", None, None, "12", None, None, "13", "12"]
    for badge, userid in zip(asked, expected, strict=True):
        person = directory.lookup(badge)
        assert (person.userid if person is not None else None) == userid, badge
