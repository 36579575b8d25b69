"""A read-only badge table packed into a few flat buffers: no Python object per person.

A Python object per person (a dataclass, its strings, its dict of extra columns) costs about
1 KiB each, and the merge that builds them leaves the heap fragmented behind them: a
50,000-person directory took ~160 MB of RSS. Here every person is two slices of two `bytes`
buffers, found through `array('I')` offsets and a hash index: ~55 bytes each, whatever the
number (PackedTable.nbytes).

- badges: the UTF-8 badges back to back, in badge order, found through a hash index (an
  `array('I')` of row numbers, open addressing);
- rows: per person `layout, userid, name, value, ...` joined by U+001F (JSON for the rare row
  whose text holds one), where the layout numbers the tuple of extra column names the person
  has, in their order (a directory has a handful of layouts, named once in `layouts`).

A lookup decodes one row (about a microsecond); `rows()` decodes them one by one, in badge
order, for the callers that walk everyone (the merge, the `directory` commands).
"""

from __future__ import annotations

import json
from array import array
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

# (badge, userid, name, extra columns) of one person
Row = tuple[str, str, str, dict[str, str]]

_SEPARATOR = "\x1f"  # between a row's cells: printable text never holds it
_AS_JSON = "\x1e"  # a row whose cells do hold it is JSON, after this mark


class PackedTable:
    """Badge -> (userid, name, extra columns), immutable once built."""

    __slots__ = ("_badge_ends", "_badges", "_index", "_layouts", "_row_ends", "_rows")

    def __init__(self, rows: Iterable[tuple[str, str, str, Mapping[str, str]]]) -> None:
        """`rows` in strictly increasing badge order (ValueError otherwise)."""
        layouts: dict[tuple[str, ...], int] = {}  # the extra columns a row has, in order
        badges, texts = bytearray(), bytearray()
        badge_ends, row_ends = array("I"), array("I")
        last: str | None = None
        for badge, userid, name, extra in rows:
            if last is not None and badge <= last:
                msg = f"badges out of order: {badge!r} after {last!r}"
                raise ValueError(msg)
            last = badge
            layout = str(layouts.setdefault(tuple(extra), len(layouts)))
            cells = [layout, userid, name, *extra.values()]
            badges += badge.encode()
            texts += _row_text(cells).encode()
            badge_ends.append(len(badges))
            row_ends.append(len(texts))
        self._badges, self._rows = bytes(badges), bytes(texts)
        self._badge_ends, self._row_ends = badge_ends, row_ends
        self._layouts = tuple(layouts)
        self._index = self._hash_index()

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
        offsets = self._index.itemsize * (
            len(self._badge_ends) + len(self._row_ends) + len(self._index)
        )
        return len(self._badges) + len(self._rows) + offsets

    def _hash_index(self) -> array[int]:
        """Open addressing over row numbers (+1; 0 is an empty slot), at most half full: a
        lookup hashes the badge in C and compares one or two slices, where a binary search
        over 50,000 badges would compare 16 in Python."""
        size = 8
        while size < 2 * len(self):
            size *= 2
        index = array("I", [0]) * size
        mask = size - 1
        for row in range(len(self)):
            slot = hash(self._badge(row)) & mask
            while index[slot]:
                slot = (slot + 1) & mask
            index[slot] = row + 1
        return index

    def _badge(self, row: int) -> bytes:
        start = self._badge_ends[row - 1] if row else 0
        return self._badges[start : self._badge_ends[row]]

    def _find(self, key: bytes) -> int | None:
        mask = len(self._index) - 1
        slot = hash(key) & mask
        while found := self._index[slot]:
            if self._badge(found - 1) == key:
                return found - 1
            slot = (slot + 1) & mask
        return None

    def _row(self, row: int) -> Row:
        start = self._row_ends[row - 1] if row else 0
        text = self._rows[start : self._row_ends[row]].decode()
        cells = json.loads(text[1:]) if text.startswith(_AS_JSON) else text.split(_SEPARATOR)
        extra = dict(zip(self._layouts[int(cells[0])], cells[3:], strict=True))
        return self._badge(row).decode(), cells[1], cells[2], extra


def _row_text(cells: list[str]) -> str:
    if any(_SEPARATOR in cell for cell in cells):
        return _AS_JSON + json.dumps(cells, ensure_ascii=False)
    return _SEPARATOR.join(cells)
