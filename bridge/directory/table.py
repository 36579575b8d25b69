"""A read-only badge table packed into a few flat buffers: no Python object per person.

A Python object per person (a dataclass, its strings, its dict of extra columns) costs about
1 KiB each, and the merge that builds them leaves the heap fragmented behind them: a
50,000-person directory took ~160 MB of RSS. Here every person is two slices of two `bytes`
buffers, found through two `array('I')` of end offsets: ~60 bytes each, whatever the number.

- badges: the UTF-8 badges back to back, sorted (UTF-8 byte order is code point order, that of
  `sorted()` on str), so a lookup is a binary search over slices;
- rows: per person, the JSON `[userid, name, column index, value, ...]`, the extra columns
  named once in `columns`, in the order the person had them.

A lookup decodes one row (a few microseconds); `rows()` decodes them one by one, for the
callers that walk everyone (the merge, the `directory` commands).
"""

from __future__ import annotations

import json
from array import array
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

# (badge, userid, name, extra columns) of one person
Row = tuple[str, str, str, dict[str, str]]

_COMPACT = {"ensure_ascii": False, "separators": (",", ":")}


class PackedTable:
    """Badge -> (userid, name, extra columns), immutable once built."""

    __slots__ = ("_badge_ends", "_badges", "_columns", "_row_ends", "_rows")

    def __init__(self, rows: Iterable[tuple[str, str, str, Mapping[str, str]]]) -> None:
        """`rows` in strictly increasing badge order (ValueError otherwise)."""
        columns: dict[str, int] = {}
        badges, texts = bytearray(), bytearray()
        badge_ends, row_ends = array("I"), array("I")
        last: str | None = None
        for badge, userid, name, extra in rows:
            if last is not None and badge <= last:
                msg = f"badges out of order: {badge!r} after {last!r}"
                raise ValueError(msg)
            last = badge
            cells: list[object] = [userid, name]
            for column, value in extra.items():
                cells += [columns.setdefault(column, len(columns)), value]
            badges += badge.encode()
            texts += json.dumps(cells, **_COMPACT).encode()  # type: ignore[arg-type]
            badge_ends.append(len(badges))
            row_ends.append(len(texts))
        self._badges, self._rows = bytes(badges), bytes(texts)
        self._badge_ends, self._row_ends = badge_ends, row_ends
        self._columns = tuple(columns)

    def __len__(self) -> int:
        return len(self._badge_ends)

    def get(self, badge: str) -> Row | None:
        index = self._find(badge.encode())
        return None if index is None else self._row(index)

    def __contains__(self, badge: object) -> bool:
        return isinstance(badge, str) and self._find(badge.encode()) is not None

    def rows(self) -> Iterator[Row]:
        """Everyone, in badge order, decoded one at a time."""
        for index in range(len(self)):
            yield self._row(index)

    def nbytes(self) -> int:
        """The size of the buffers (what a person costs, times the people)."""
        offsets = self._badge_ends.itemsize * (len(self._badge_ends) + len(self._row_ends))
        return len(self._badges) + len(self._rows) + offsets

    def _badge(self, index: int) -> bytes:
        start = self._badge_ends[index - 1] if index else 0
        return self._badges[start : self._badge_ends[index]]

    def _find(self, key: bytes) -> int | None:
        low, high = 0, len(self._badge_ends)
        while low < high:
            middle = (low + high) // 2
            if self._badge(middle) < key:
                low = middle + 1
            else:
                high = middle
        if low < len(self._badge_ends) and self._badge(low) == key:
            return low
        return None

    def _row(self, index: int) -> Row:
        start = self._row_ends[index - 1] if index else 0
        cells = json.loads(self._rows[start : self._row_ends[index]])
        extra = {self._columns[cells[n]]: cells[n + 1] for n in range(2, len(cells), 2)}
        return self._badge(index).decode(), cells[0], cells[1], extra
