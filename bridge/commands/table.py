"""The one table format of the operator commands: aligned columns, numbers to the right;
and `printable`, which every line they print goes through (common.emit)."""

from __future__ import annotations

import re
from collections.abc import Sequence

# What a terminal would act on rather than show, or show misleadingly: C0 and C1 controls,
# DEL (ESC starts the escape sequences), the bidi embeddings, overrides and isolates (U+202E
# makes text read backwards, "Trojan Source"), the bidi marks, the line and paragraph
# separators, and lone surrogates (not encodable, so not printable at all).
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_BLANKS = re.compile("[ \t\r\n]+")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")


def printable(text: str) -> str:
    """Text from terminals, vendors or the directory, safe to print on an operator's terminal:
    each character above escaped (`\\x1b`, `\\u202e`, `\\n`), everything else as it is."""
    return _UNPRINTABLE.sub(_escape, text)


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    # A multi-line error stays on its row: line breaks and tabs read as one space; any other
    # control character is escaped.
    return printable(_BLANKS.sub(" ", str(value)).strip())


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Headers and rows as aligned text; int and float cells are right-aligned. A header
    or cell never holds a line break, so `line.split()` reads a row back (tests do)."""
    texts = [[cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in texts:
        for n, text in enumerate(row):
            widths[n] = max(widths[n], len(text))
    numeric = [
        bool(rows) and all(isinstance(row[n], int | float) or row[n] is None for row in rows)
        for n in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(widths[n]) if numeric[n] else value.ljust(widths[n])
            for n, value in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in texts)])
