"""Badge → person, from a CSV file the site keeps (`badge,userid,name`, any column order).

Extra columns are kept per person (per-sink ids, say). A badge listed twice with different
people is left unmapped and reported: sending a swipe to the wrong person is worse than holding
it back. Snapshots are immutable; DirectoryFile swaps in a new one when the file changes.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from bridge.directory.table import PackedTable, Row
from bridge.events import PayloadError, normalise_badge, show

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

_REQUIRED = ("badge", "userid")
_KNOWN = (*_REQUIRED, "name")
_DELIMITERS = (",", ";", "\t")  # spreadsheets in many locales export ';'
_GONE = (-1, -1, -1)  # the stamp of a file that cannot be stat()ed


class DirectoryError(Exception):
    """The directory file cannot be used at all; str() says which file and why."""


@dataclass(frozen=True, slots=True)
class Person:
    badge: str
    userid: str
    name: str
    extra: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


class Directory:
    """An immutable snapshot of the badge directory.

    The people are packed (bridge.directory.table), not kept as Person objects: a Person is
    made for the one badge looked up, or one at a time by people()."""

    __slots__ = ("_conflicted", "_last", "_people", "_problems")

    def __init__(
        self,
        people: Mapping[str, Person],
        problems: Iterable[str] = (),
        conflicted: Iterable[str] = (),
    ) -> None:
        self._people = PackedTable(
            (badge, person.userid, person.name, person.extra)
            for badge, person in sorted(people.items())
        )
        self._problems = tuple(problems)
        self._conflicted = frozenset(conflicted)
        # The last lookup and its answer: ingest looks a swipe's badge up twice in a row (the
        # person at each sink, then the name for the terminal's feedback).
        self._last: tuple[str, Person | None] | None = None

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[str, str, str, Mapping[str, str]]],
        problems: Iterable[str] = (),
        conflicted: Iterable[str] = (),
    ) -> Directory:
        """From (badge, userid, name, extra) in badge order, packed as they come: no Person
        per row on the way (the merge of 50,000 people)."""
        directory = cls({}, problems, conflicted)
        directory._people = PackedTable(rows)
        return directory

    @classmethod
    def empty(cls) -> Directory:
        return cls({})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Directory:
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except OSError as err:
            msg = f"cannot read badge directory {path}: {err.strerror or err}"
            raise DirectoryError(msg) from None
        except UnicodeDecodeError:
            msg = f"badge directory {path} is not UTF-8 text"
            raise DirectoryError(msg) from None
        try:
            return cls.from_csv_text(text)
        except DirectoryError as err:
            msg = f"badge directory {path}: {err}"
            raise DirectoryError(msg) from None

    @classmethod
    def from_csv_text(cls, text: str) -> Directory:
        rows = _content_lines(text.removeprefix("\ufeff"))
        try:
            _, header_line = next(rows)
        except StopIteration:
            msg = "no header row (expected badge,userid,name)"
            raise DirectoryError(msg) from None
        delimiter = max(_DELIMITERS, key=header_line.count)
        header = _header(_split(header_line, delimiter))
        problems: list[str] = []
        extra_columns = [name for name in header if name and name not in _KNOWN]
        # Per badge its first row as plain strings, and Person objects only for the badges
        # listed again: a Person (and its dict) per row would cost ~1 KiB each at 50,000.
        first: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        repeats: dict[str, list[Person]] = {}
        for number, line in rows:
            person = _person(number, _split(line, delimiter), header, problems)
            if person is None:
                continue
            if person.badge not in first:
                first[person.badge] = (person.userid, person.name, tuple(person.extra.values()))
                continue
            if person.badge not in repeats:
                userid, name, values = first[person.badge]
                extra = MappingProxyType(dict(zip(extra_columns, values, strict=True)))
                repeats[person.badge] = [Person(person.badge, userid, name, extra)]
            repeats[person.badge].append(person)
        conflicted = []
        for badge in (badge for badge in first if badge in repeats):  # in order of first rows
            conflict = _conflict(badge, repeats[badge])
            if conflict:
                problems.append(conflict)
                conflicted.append(badge)
        unmapped = frozenset(conflicted)
        people = (
            (badge, *first[badge][:2], dict(zip(extra_columns, first[badge][2], strict=True)))
            for badge in sorted(first)
            if badge not in unmapped
        )
        return cls.from_rows(people, problems, conflicted)

    @property
    def problems(self) -> tuple[str, ...]:
        """Rows that were skipped and badges left unmapped, for the operator to fix."""
        return self._problems

    @property
    def conflicted(self) -> frozenset[str]:
        """Badges listed for more than one person, so left unmapped."""
        return self._conflicted

    def people(self) -> list[Person]:
        """Everyone mapped, in badge order."""
        return list(self.iter_people())

    def iter_people(self) -> Iterator[Person]:
        """Everyone mapped, in badge order, made one at a time (the merge walks 50,000)."""
        for row in self._people.rows():
            yield _unpacked(row)

    def lookup(self, badge: str) -> Person | None:
        last = self._last  # one read: a thread swapping it in between cannot mix two answers
        if last is not None and last[0] == badge:
            return last[1]
        try:
            row = self._people.get(normalise_badge(badge))
        except PayloadError:
            return None
        person = None if row is None else _unpacked(row)
        self._last = (badge, person)
        return person

    def __len__(self) -> int:
        return len(self._people)

    def __repr__(self) -> str:
        return f"<Directory {len(self)} badges, {len(self._problems)} problems>"


def _unpacked(row: Row) -> Person:
    badge, userid, name, extra = row
    return Person(badge, userid, name, MappingProxyType(extra))


def _content_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) without blank lines and '#' comments. One record per line."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, line


def _split(line: str, delimiter: str) -> list[str]:
    return [cell.strip() for cell in next(csv.reader([line], delimiter=delimiter))]


def _header(cells: list[str]) -> list[str]:
    names = [cell.lower() for cell in cells]
    missing = [name for name in _REQUIRED if name not in names]
    if missing:
        msg = f"the header row {','.join(cells)!r} has no {' or '.join(missing)} column"
        raise DirectoryError(msg)
    repeated = sorted({name for name in names if name and names.count(name) > 1})
    if repeated:
        msg = f"the header row names {', '.join(repeated)} more than once"
        raise DirectoryError(msg)
    return names


def _person(number: int, cells: list[str], header: list[str], problems: list[str]) -> Person | None:
    if any(cells[len(header) :]):  # an unquoted comma in a name shifts the columns after it
        problems.append(f"line {number}: {len(cells)} fields, the header names {len(header)}")
        return None
    cells = cells[: len(header)]  # a spreadsheet's trailing empty cells are harmless
    row = dict(zip(header, cells + [""] * (len(header) - len(cells)), strict=True))
    try:
        badge = normalise_badge(row["badge"])
    except PayloadError as err:
        problems.append(f"line {number}: badge {err}")
        return None
    if not row["userid"]:
        problems.append(f"line {number}: badge {badge} has no userid")
        return None
    if not row["userid"].isprintable():
        problems.append(f"line {number}: userid {show(row['userid'])} has non-printable characters")
        return None
    extra = {name: value for name, value in row.items() if name and name not in _KNOWN}
    return Person(badge, row["userid"], row.get("name", ""), MappingProxyType(extra))


def _conflict(badge: str, persons: list[Person]) -> str | None:
    """Why a badge listed more than once cannot be mapped, or None if all rows agree."""
    times = "twice" if len(persons) == 2 else f"{len(persons)} times"
    userids = list(dict.fromkeys(person.userid for person in persons))
    if len(userids) > 1:
        return (
            f"badge {badge} is listed {times} with different userids ({', '.join(userids)}):"
            " left unmapped"
        )
    names = {name for person in persons for name in person.extra}
    columns = sorted(n for n in names if len({person.extra.get(n) for person in persons}) > 1)
    if columns:  # per-sink ids disagree: as much a guess as two userids
        return (
            f"badge {badge} is listed {times} for userid {userids[0]} with different"
            f" {', '.join(columns)}: left unmapped"
        )
    return None  # names may differ in spelling; the first row stands


class DirectoryFile:
    """The directory file on disk and its latest good snapshot.

    Synchronous and small: the caller polls reload_if_changed(), in a thread if it must.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp = self._stat()  # before reading: a write in between is seen next time
        self._current = Directory.load(self.path)
        self._failed: tuple[int, int, int] | None = None

    @property
    def current(self) -> Directory:
        return self._current

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed; True if a new snapshot is in place.

        On an unreadable or broken file the previous snapshot stays and DirectoryError is
        raised, once per broken version, so a poll loop logs the problem once, not every poll.
        """
        try:
            stamp = self._stat()
        except DirectoryError:
            if self._failed == _GONE:
                return False
            self._failed = _GONE
            raise
        if stamp in (self._stamp, self._failed):
            return False
        try:
            directory = Directory.load(self.path)
        except DirectoryError:
            self._failed = stamp
            raise
        self._stamp, self._current, self._failed = stamp, directory, None
        return True

    def _stat(self) -> tuple[int, int, int]:
        try:
            info = self.path.stat()
        except OSError as err:
            msg = f"cannot read badge directory {self.path}: {err.strerror or err}"
            raise DirectoryError(msg) from None
        return info.st_mtime_ns, info.st_size, info.st_ino
