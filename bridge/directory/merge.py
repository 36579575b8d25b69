"""Merging the directory file with what the sources know into one Directory. Pure.

- Badge sources (Go2Clock, Q2) map a badge to columns; they are merged badge by badge, in the
  configured source order.
- The file is the operator's override: every column a file row sets wins over the sources, and
  settles any disagreement about that column. A badge the file itself lists for two people
  stays unmapped whatever the sources say.
- Account sources (McTime, TimeTrack) add their per-sink id to every person whose employee
  number (or e-mail, case-insensitive) matches; a key that two of their users share joins none.
- Two different values of an identifying column for one badge (userid, employee number,
  e-mail, a per-sink id) are a conflict: the badge is left unmapped and the conflict reported.
  A name, role or department spelled differently is not: the first value stands.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from bridge.directory.file import Directory
from bridge.directory.records import DESCRIPTIVE, NAME, Record, join_key

FILE = "file"
USERID = "userid"

Row = dict[str, tuple[str, str]]  # column -> (value, the source that gave it)


@dataclass(frozen=True)
class Merged:
    directory: Directory
    origins: Mapping[str, Mapping[str, str]]  # badge -> column -> source
    conflicts: tuple[str, ...] = ()  # the badges left unmapped, and why
    unjoined: tuple[str, ...] = field(default=())  # account keys shared by several users


def merge(file: Directory | None, sources: Mapping[str, Sequence[Record]]) -> Merged:
    """The directory, with where each column came from (for the `directory` commands)."""
    state = _merged(file, sources)
    origins = {
        badge: MappingProxyType({column: src for column, (_, src) in row.items()})
        for badge, row in state.rows.items()
    }
    return Merged(
        directory=state.directory(),
        origins=MappingProxyType(origins),
        conflicts=tuple(state.conflicts),
        unjoined=tuple(state.unjoined),
    )


def merge_directory(file: Directory | None, sources: Mapping[str, Sequence[Record]]) -> Directory:
    """The directory alone (what the daemon keeps): packed badge by badge, no origins."""
    if not any(sources.values()):
        # Nothing to merge: the file's own snapshot, not a second copy of it. It keeps a
        # row's empty columns, which the merge drops; every lookup reads "" as no value.
        return file if file is not None else Directory.empty()
    return _merged(file, sources).directory()


@dataclass
class _State:
    rows: dict[str, Row]
    clashes: dict[str, list[tuple[str, str]]]
    problems: tuple[str, ...]
    conflicts: list[str]
    unjoined: list[str]
    unmapped: frozenset[str]

    def directory(self) -> Directory:
        people = (
            _person(badge, self.rows[badge])
            for badge in sorted(self.rows)
            if badge not in self.unmapped
        )
        return Directory.from_rows(people, self.problems, self.unmapped)


def _merged(file: Directory | None, sources: Mapping[str, Sequence[Record]]) -> _State:
    rows: dict[str, Row] = {}
    clashes: dict[str, list[tuple[str, str]]] = {}  # only badges with a clash: 50,000 lists else
    for source, records in sources.items():
        for record in records:
            if record.badge is not None:
                _add(
                    rows.setdefault(record.badge, {}), record.fields, source, clashes, record.badge
                )
    if file is not None:
        _apply_file(file, rows, clashes)
    unjoined = _join_accounts(rows, clashes, sources)
    blocked = file.conflicted if file is not None else frozenset()
    conflicts = [
        f"badge {badge}: {'; '.join(text for _, text in clashes[badge])}: left unmapped"
        for badge in sorted(clashes)
        if clashes[badge] and badge not in blocked
    ]
    problems = (*(file.problems if file is not None else ()), *unjoined, *conflicts)
    unmapped = blocked | {badge for badge, found in clashes.items() if found}
    return _State(rows, clashes, problems, conflicts, unjoined, frozenset(unmapped))


def _add(
    row: Row,
    fields: Mapping[str, str],
    source: str,
    clashes: dict[str, list[tuple[str, str]]],
    badge: str,
) -> None:
    for column, value in fields.items():
        held = row.get(column)
        if held is None:
            row[column] = (value, source)
        elif held[1] == FILE or column in DESCRIPTIVE:
            continue  # the operator's word stands; a name may be spelled two ways
        elif join_key(column, held[0]) != join_key(column, value):
            clashes.setdefault(badge, []).append(
                (column, f"{held[1]} says {column} {held[0]}, {source} says {column} {value}")
            )


def _apply_file(
    file: Directory, rows: dict[str, Row], clashes: dict[str, list[tuple[str, str]]]
) -> None:
    for person in file.iter_people():
        columns = {USERID: person.userid, NAME: person.name, **person.extra}
        row = rows.setdefault(person.badge, {})
        set_here = {column for column, value in columns.items() if value}
        for column in set_here:
            row[column] = (columns[column], FILE)
        if person.badge in clashes:
            kept = [c for c in clashes[person.badge] if c[0] not in set_here]
            clashes[person.badge] = kept


def _join_accounts(
    rows: dict[str, Row],
    clashes: dict[str, list[tuple[str, str]]],
    sources: Mapping[str, Sequence[Record]],
) -> list[str]:
    problems = []
    for source, records in sources.items():
        index: defaultdict[tuple[str, str], list[Record]] = defaultdict(list)
        for record in records:
            if record.badge is None and record.join_on and record.join_on in record.fields:
                key = join_key(record.join_on, record.fields[record.join_on])
                index[(record.join_on, key)].append(record)
        shared = {key for key, found in index.items() if len({_ids(r) for r in found}) > 1}
        for join_on, key in sorted(shared):
            count = len(index[(join_on, key)])
            problems.append(f"{source}: {count} users have {join_on} {key}: none of them joined")
        join_columns = {join_on for join_on, _ in index}
        for badge, row in rows.items():
            for join_on in join_columns:
                held = row.get(join_on)
                joined = (join_on, join_key(join_on, held[0])) if held is not None else None
                if joined is None or joined in shared or joined not in index:
                    continue
                extra = {c: v for c, v in index[joined][0].fields.items() if c != join_on}
                _add(row, extra, source, clashes, badge)
    return problems


def _ids(record: Record) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((c, v) for c, v in record.fields.items() if c not in DESCRIPTIVE))


def _person(badge: str, row: Row) -> tuple[str, str, str, dict[str, str]]:
    """(badge, userid, name, extra columns in name order), as Directory.from_rows packs it."""
    extra = {column: value for column, (value, _) in row.items() if column not in (USERID, NAME)}
    return (
        badge,
        row.get(USERID, ("", ""))[0],
        row.get(NAME, ("", ""))[0],
        dict(sorted(extra.items())),
    )
